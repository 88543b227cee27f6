"""What viz.py draws from, one idea per module: which layer a CAM looks at (layers), the CAM methods
(cams), how faithful a map is (faithfulness), adversarial attacks (attacks), pixels <-> model inputs
(pixels), picture grids and charts (figures), the studies that make each picture (study), the test
pass behind them (evaluation) and the report (report).

Everything takes normalised NCHW float32 images and a model in eval mode, uncompiled (hooks on a
compiled model are ignored), on whatever device the model and images share.
"""
