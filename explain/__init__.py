"""Why a trained model is right or wrong, one idea per module: which layer a CAM looks at (layers),
the CAM methods (cams), how faithful a map is (faithfulness: ROAD), whether a map depends on the
weights (sanity: model randomisation), means over images with intervals and ranks (intervals), the
methods compared with that evidence (comparison), adversarial attacks (attacks), pixels <-> model
inputs (pixels), picture grids and charts (figures), the pictures of a model (study), the test pass
behind them (evaluation), a checkpoint explained end to end (explanation: the API that notebooks and
viz.py share) and the report (report).

Everything takes normalised NCHW float32 images and a model in eval mode, uncompiled (hooks on a
compiled model are ignored), on whatever device the model and images share.
"""
from .explanation import Explanation

__all__ = ["Explanation"]
