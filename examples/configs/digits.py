"""The run of ``examples/train_digits.py`` as a config file for the ``pluginloop`` command.

    pluginloop train examples/configs/digits.py
    pluginloop train examples/configs/digits.py --cfg-options max_epochs=3 optimizer.lr=0.001
    pluginloop hooks examples/configs/digits.py          # the hook plan, without training

A config is plain Python: every top-level name that does not start with ``_`` is a Runner
argument (a misspelled one, such as ``max_epoch``, fails before anything runs, with a
suggestion). Imports, and classes and functions defined here, are not arguments; other
helpers start with ``_``. Objects are built directly, as in a script.
"""

import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


class DigitsCNN(nn.Module):
    """Two 3x3 convolutions and a pooling step (8x8 -> 4x4), then a two-layer classifier."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Dropout(0.2), nn.Linear(32 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, num_classes),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Class logits for a batch of ``(N, 1, 8, 8)`` images."""
        return self.classifier(self.features(images))


def accuracy(preds: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The fraction of a batch classified correctly."""
    return (preds.argmax(dim=1) == targets).float().mean()


# The data ships inside scikit-learn: a stratified 70 / 10 / 20 split of 1,797 images.
_digits = load_digits()
_images = torch.tensor(_digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
_labels = torch.tensor(_digits.target, dtype=torch.long)
_rest, _test = train_test_split(range(len(_labels)), test_size=0.2, stratify=_labels, random_state=0)
_train, _val = train_test_split(_rest, test_size=0.125, stratify=_labels[_rest], random_state=0)


def _loader(indices: list[int], shuffle: bool = False) -> DataLoader:
    return DataLoader(TensorDataset(_images[indices], _labels[indices]), batch_size=32, shuffle=shuffle)


seed = 0
torch.manual_seed(seed)  # the model is built here, before the Runner seeds everything
model = DigitsCNN()
train_dataloader = _loader(_train, shuffle=True)
val_dataloader = _loader(_val)
test_dataloader = _loader(_test)
loss_fn = nn.functional.cross_entropy
metrics = {"acc": accuracy}

optimizer = dict(type="AdamW", lr=3e-3, weight_decay=1e-4)
max_epochs = 10
# T_max follows max_epochs here; with --cfg-options max_epochs=N also pass scheduler.T_max=N.
scheduler = dict(type="CosineAnnealingLR", T_max=max_epochs, by_epoch=True)

# The eight default hooks stay on; these entries are merged over them.
default_hooks = dict(
    checkpoint=dict(type="CheckpointHook", interval=1, max_keep_ckpts=2, save_best="acc"),
    logger=dict(type="LoggerHook", interval=20),
)
work_dir = "work_dirs/digits"
