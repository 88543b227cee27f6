"""The installer's last check, run in a fresh interpreter with the kit's folder first on its path: DALI
imports from the kit, one of the project's pipelines (the CIFAR-10 training pipeline, every
augmentation) builds and runs on DALI's CPU backend over the converted data, and grad-cam imports.
Prints one JSON line; any failure is an exception (the installer shows its last line).

    python -m offline.probe DATA_DIR      # with PYTHONPATH=SITE:REPOSITORY
"""
import importlib.metadata as md
import json
import platform
import sys
import time

BATCH = 32


def probe(data_dir: str) -> dict:
    started = time.perf_counter()
    import nvidia.dali
    import torch

    import pipeline
    data = pipeline.open_dataset("cifar10", data_dir, download=False)
    batch = min(BATCH, len(data.train[1]))
    spec = pipeline.BatchSpec(mean=data.mean, std=data.std, batch_size=batch, device=torch.device("cpu"))
    images, labels = next(iter(data.train_loader(data.train, spec)))
    if tuple(images.shape) != (batch, 3, data.image_size, data.image_size) or not torch.isfinite(images).all():
        raise RuntimeError(f"the training pipeline gave images of shape {tuple(images.shape)}")
    if labels.shape != (batch,) or not 0 <= int(labels.min()) <= int(labels.max()) < len(data.classes):
        raise RuntimeError(f"the training pipeline gave labels {labels.tolist()}")
    import pytorch_grad_cam
    return dict(python=platform.python_version(), dali=nvidia.dali.__version__, dali_path=nvidia.dali.__file__,
                grad_cam=md.version("grad-cam"), grad_cam_path=pytorch_grad_cam.__file__, torch=torch.__version__,
                batch=list(images.shape), seconds=round(time.perf_counter() - started, 1))


if __name__ == "__main__":
    print(json.dumps(probe(sys.argv[1])))
