"""The training augmentation, as numbers every loader shares (DALI's pipelines, the torch-ops peer in
pipeline/tensor_loader.py): no DALI import here."""

PAD = 4        # random crop: image zero-padded by 4 on each side, 9 x 9 = 81 offsets
CUTOUT = 16    # cutout square side for 32 px images (DeVries & Taylor 2017), centre uniform, clipped


def cutout_side(image_size: int) -> int:
    """The same share of the image as 16 px of 32."""
    return max(1, round(CUTOUT * image_size / 32))


def cutout_fill(mean) -> list:
    """The mean colour as uint8 pixel values: what a cut-out square holds before normalisation
    (~0 once normalised, as in DeVries & Taylor)."""
    return [round(255 * m) for m in mean]
