"""Why a trained model is right or wrong, one idea per module: which layer a CAM looks at (layers),
the CAM methods (cams), how faithful a map is (faithfulness: ROAD), whether a map depends on the
weights (sanity: model randomisation), means over images with intervals and ranks (intervals), the
methods compared with that evidence (comparison), adversarial attacks (attacks), pixels <-> model
inputs (pixels), picture grids and charts (figures), the pictures of a model (pictures), the test pass
behind them (evaluation), a checkpoint explained end to end (explanation: the API that notebooks and
viz.py share), the report (report) and what can be asked of it (options: loads without torch).

Everything takes normalised NCHW float32 images and a model in eval mode, uncompiled (hooks on a
compiled model are ignored), on whatever device the model and images share.
"""
from common.lazy import on_first_use

from .options import Options, parse

__getattr__ = on_first_use(__name__, {".explanation": ("Explanation",)})

__all__ = ["Explanation", "Options", "parse"]
