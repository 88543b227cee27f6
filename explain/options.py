"""What can be asked of an explanation, declared once for viz.py and the Python API alike, and checked
before the long work: the CAM methods (by name: grad-cam loads with the first map), the attacks, the
default sizes, and viz.py's options (frozen, checked on construction, as training's Config). Neither
torch nor grad-cam is imported here, so a bad flag is refused in a blink."""
from dataclasses import dataclass

from common import cli
from common import device as devices
from common.cli import UsageError, option

# Each method and its class in pytorch_grad_cam.
CAM_CLASSES = {"gradcam": "GradCAM", "gradcam++": "GradCAMPlusPlus", "eigencam": "EigenCAM",
               "scorecam": "ScoreCAM", "ablationcam": "AblationCAM"}
DEFAULT_METHODS = ("gradcam", "gradcam++", "eigencam", "scorecam")
ATTACKS = ("fgsm", "pgd")
METHOD_IMAGES = 4   # methods.png's pictures: ScoreCAM costs a forward pass per channel per image
CPU_TEST_IMAGES = 2000  # the CPU's default test pass (every class in its share): all 10,000 take minutes
# The comparison's images by default: on a GPU enough to separate methods whose scores differ by a few
# hundredths; on a CPU what ScoreCAM allows in minutes (its maps cost a pass per channel per image,
# and the sanity check draws them again at every depth). Either is a flag away.
FAITHFULNESS_IMAGES = {"cuda": 500, "cpu": 40}
SANITY_IMAGES = {"cuda": 100, "cpu": 8}


def check_methods(names) -> list:
    """The method names, each once, in order ("a,b" counts as two); UsageError naming any unknown."""
    names = list(dict.fromkeys(m for text in names for m in text.split(",") if m))
    unknown = [m for m in names if m not in CAM_CLASSES]
    if unknown or not names:
        raise UsageError(f"--method {' '.join(unknown)}: choose from {', '.join(CAM_CLASSES)}")
    return names


def check_count(n: int):
    if n < 1:
        raise UsageError(f"--n must be >= 1 (got {n})")


def check_attack(method: str, eps: float):
    """UsageError, in the CLI's words, for an attack that cannot run; eps is in pixel units /255."""
    if method not in ATTACKS:
        raise UsageError(f"--attack {method!r}: choose from {', '.join(ATTACKS)}")
    if not 0 < eps <= 255:
        raise UsageError(f"--eps is in pixel units /255 and must be in (0, 255] (got {eps})")


def comparison_sizes(images, sanity_images, device_type: str) -> tuple:
    """(images, sanity images) for the faithfulness comparison: the device's defaults where None; at
    least 2 images (an interval needs two), the sanity check on at most as many (0: none)."""
    images = FAITHFULNESS_IMAGES[device_type] if images is None else images
    sanity_images = min(SANITY_IMAGES[device_type], images) if sanity_images is None else sanity_images
    if images < 2:
        raise UsageError(f"--faithfulness-images must be at least 2, for an interval (got {images}); "
                         "0 on the command line leaves the comparison out")
    if not 0 <= sanity_images <= images:
        raise UsageError(f"--sanity-images must be between 0 (no sanity check) and --faithfulness-images "
                         f"({images}) (got {sanity_images})")
    return images, sanity_images


@dataclass(frozen=True)
class Options:
    """viz.py's options: `Options(checkpoint=...)` in Python, flags on the command line."""
    checkpoint: str = option("", "a .pt file written by train.py", required=True)
    out: str = option("", "output folder (default: viz/ next to the checkpoint)")
    data_dir: str = option("", "dataset folder (default: the one the run trained on)")
    n: int = option(10, f"images per gallery (methods.png: the first {METHOD_IMAGES})")
    layer: str = option("layer3", "where the CAMs look (layer3 is 8x8 on CIFAR)")
    method: tuple = option(DEFAULT_METHODS, f"CAM methods to compare, of {', '.join(CAM_CLASSES)} "
                                            f"(default: {' '.join(DEFAULT_METHODS)})", nargs="+", type=str)
    device: str = option("auto", "where to run", choices=devices.CHOICES)
    adversarial: bool = option(False, "attack correctly classified images")
    attack: str = option(None, "with --adversarial: fgsm or pgd (default fgsm)", choices=ATTACKS)
    eps: float = option(None, "with --adversarial: attack budget in pixel units /255 (default 8)", type=float)
    limit_test: int = option(None, "use N test images, every class kept in its share (as train.py's "
                                   f"--limit-test); 0: all (default: all on a GPU, {CPU_TEST_IMAGES} on the CPU, "
                                   "where all 10,000 take minutes)", type=int)
    faithfulness_images: int = option(
        None, "rank the --method maps by ROAD on N of the test images (every class in its share), with "
              "95 %% intervals and a random-map baseline; 0: leave it out (default: "
              f"{FAITHFULNESS_IMAGES['cuda']} on a GPU, {FAITHFULNESS_IMAGES['cpu']} on the CPU, where "
              "ScoreCAM alone costs seconds an image)", type=int)
    sanity_images: int = option(
        None, "the model-randomisation sanity check on N of those images; 0: leave it out (default: "
              f"{SANITY_IMAGES['cuda']} on a GPU, {SANITY_IMAGES['cpu']} on the CPU)", type=int)

    def __post_init__(self):
        check_methods(self.method)
        check_count(self.n)
        if (self.attack or self.eps is not None) and not self.adversarial:
            raise UsageError("--attack and --eps set up --adversarial: add it, or drop them")
        check_attack(*self.attack_budget)
        if self.faithfulness_images != 0:  # the device's defaults: torch says which device "auto" is
            comparison_sizes(self.faithfulness_images, self.sanity_images, devices.choose(self.device).type)

    @property
    def methods(self) -> list:
        return check_methods(self.method)

    @property
    def attack_budget(self) -> tuple:
        """(the attack, its eps): fgsm at 8/255 unless given."""
        return self.attack or "fgsm", 8.0 if self.eps is None else self.eps


def parse(argv, description: str) -> Options:
    return Options(**cli.parse(Options, argv, description))
