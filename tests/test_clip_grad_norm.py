"""--clip-grad-norm: the optimizer steps on gradients whose total norm is at most the limit,
also under a GradScaler, and a huge learning rate stays finite with it."""

import math
import types

import pytest
import torch
import torch.nn as nn

from workbench.core.training.batches import Batch
from workbench.core.training.loop import train_one_epoch
from workbench.core.training.parts import TrainingParts


class RecordingSGD(torch.optim.SGD):
    """SGD that notes the total gradient norm each step is taken on."""

    def __init__(self, params, **kwargs):
        super().__init__(params, **kwargs)
        self.norms = []

    def step(self, closure=None):
        grads = [p.grad for group in self.param_groups for p in group["params"] if p.grad is not None]
        self.norms.append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))))
        return super().step(closure)


class FewBatches:
    device = torch.device("cpu")

    def __init__(self, steps=3):
        generator = torch.Generator().manual_seed(0)
        self.items = [Batch(torch.randn(16, 3, 8, 8, generator=generator) * 100,
                            torch.randint(0, 10, (16,), generator=generator), torch.arange(16))
                      for _ in range(steps)]

    def __len__(self):
        return len(self.items)

    def batches(self, order, start_step=0, epoch=1):
        yield from self.items[start_step:]


class Tally:
    global_step = epoch_step = 0

    def add(self, loss, logits, labels):
        self.global_step += 1
        self.epoch_step += 1


def one_epoch(limit: float, scaled: bool) -> list[float]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 10))
    optimizer = RecordingSGD(model.parameters(), lr=0.1)
    parts = TrainingParts(
        optimizer=optimizer,
        scheduler=torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0),
        scaler=torch.amp.GradScaler("cpu", enabled=scaled),
        criterion=nn.CrossEntropyLoss(),
        clip_grad_norm=limit,
    )
    control = types.SimpleNamespace(wait_while_paused=lambda: None, stop_requested=False)
    train_one_epoch(model, FewBatches(), torch.arange(48), parts, control, Tally(), epoch=1)
    return optimizer.norms


@pytest.mark.parametrize("scaled", [False, True], ids=["plain", "grad-scaler"])
def test_steps_take_gradients_clipped_to_the_limit(scaled):
    unclipped = one_epoch(0.0, scaled)
    clipped = one_epoch(0.5, scaled)
    assert min(unclipped) > 0.5  # the limit is below what these batches give, so it acts
    # Exactly at the limit, not far below: a scaler's gradients clipped before unscaling would end
    # up 65,536 times smaller than the limit once the scaler's step unscales them.
    assert clipped and all(0.5 * (1 - 1e-4) <= norm <= 0.5 * (1 + 1e-4) for norm in clipped)


def test_a_huge_learning_rate_with_clipping_stays_finite(tiny, recorder):
    from workbench.core.events import EpochMetrics, Failed, Finished
    from workbench.core.training.engine import fit

    fit(tiny(optimizer="sgd", lr=1000.0, momentum=0.0, schedule="constant", clip_grad_norm=1e-4), recorder)
    assert not recorder.of(Failed) and recorder.of(Finished)
    epochs = recorder.of(EpochMetrics)
    assert epochs and all(math.isfinite(row.train_loss) for row in epochs)
