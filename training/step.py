"""One training step and one evaluation pass; totals stay on the device (no host sync per batch)."""
import torch
import torch.nn.functional as F


def train_step(model, optimizer, scaler, autocast, x, y, smoothing=0.0):
    """Forward, backward, update. Returns the loss and correct count as tensors (no host sync)."""
    with autocast:
        logits = model(x)
        loss = F.cross_entropy(logits, y, label_smoothing=smoothing)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return loss.detach().float(), (logits.argmax(1) == y).sum()


@torch.inference_mode()
def evaluate(model, loader, autocast, device) -> torch.Tensor:
    """(loss sum, correct, images) over every image of this shard exactly once, as float64 on device."""
    model.eval()
    sums = torch.zeros(3, dtype=torch.float64, device=device)
    for x, y in loader:
        with autocast:
            logits = model(x).float()
        loss = F.cross_entropy(logits, y, reduction="sum")
        sums += torch.stack([loss, (logits.argmax(1) == y).sum(), torch.full_like(loss, len(y))])
    model.train()
    return sums
