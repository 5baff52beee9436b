"""What every ShuffleNet network here shares: the pooled head, the classifier swap for fine-tuning, and the
authors' initialisation."""
from __future__ import annotations

from mindspore import Tensor, nn, ops
from mindspore.common import initializer as init

__all__ = ["ClassifierNet", "init_like_authors", "feature_levels"]


class ClassifierNet(nn.Cell):
    """Base of the networks: ``construct = forward_head(forward_features(x))``.

    A subclass sets ``self.num_features`` (and ``self.classifier_bias`` where the classifier has a bias), calls
    ``self._make_head(num_classes, drop_rate)`` (dropout and classifier) and defines ``stem``, ``stages`` and
    ``forward_features``.
    """

    classifier_bias = False

    def global_pool(self, x: Tensor) -> Tensor:
        return ops.mean(x, (2, 3))

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = self.global_pool(x)
        if pre_logits:
            return x
        return self.classifier(self.dropout(x))

    def construct(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Cell:
        return self.classifier

    def _make_head(self, num_classes: int, drop_rate: float) -> None:
        """The dropout before the classifier (none at rate 0) and the classifier."""
        self.drop_rate = drop_rate
        self.dropout = nn.Dropout(p=drop_rate) if drop_rate > 0 else nn.Identity()
        self.classifier = self._make_classifier(num_classes)

    def _make_classifier(self, num_classes: int) -> nn.Cell:
        if num_classes <= 0:
            return nn.Identity()
        return nn.Dense(self.num_features, num_classes, has_bias=self.classifier_bias)

    # the model's switches for weights trained by other code (the checkpoint metadata records them)

    def set_pool_same(self) -> "ClassifierNet":
        """Pool like MindCV (``pad_mode="same"``: 0 before, 1 after) instead of the authors' and torchvision's 1
        on each side: the stem's max pool, and every sub-cell that has its own ``set_pool_same`` (V1's units).
        Weights trained with MindCV's code are only exact with MindCV's pooling."""
        if hasattr(self, "maxpool"):
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, pad_mode="same")
        if getattr(self, "pad_pool", None) is not None:  # V2's fast stem pool (zero pad + pool) pads 1 each side
            self.pad_pool = None
        for _, cell in self.cells_and_names():
            if cell is not self and callable(getattr(cell, "set_pool_same", None)):
                cell.set_pool_same()
        self.pool_same = True
        return self

    def uses_pool_same(self) -> bool:
        pool = getattr(self, "maxpool", None)
        return str(getattr(pool, "pad_mode", "")).upper() == "SAME" and getattr(self, "pad_pool", None) is None

    def set_authors_shuffle(self) -> "ClassifierNet":
        """Shuffle channels in the authors' order (only ShuffleNet V1 has a choice)."""
        return self

    def uses_authors_shuffle(self) -> bool:
        return False

    def prepare_export(self) -> "ClassifierNet":
        """Rewrite the stem's padded max pool as zero padding + an unpadded pool, which ONNX can express (MindSpore
        lowers a padded MaxPool2d to MaxPool3DWithArgmax, which its ONNX exporter lacks). Zero padding gives the
        same result: the stem's pool follows a ReLU (inputs >= 0). V1's shortcut pool is already a zero pad and a
        valid pool; MindCV-style "same" pools export as they are."""
        pool = getattr(self, "maxpool", None)
        padded = isinstance(pool, nn.MaxPool2d) and str(getattr(pool, "pad_mode", "")).upper() == "PAD"
        if getattr(self, "pad_pool", None) is not None:
            # V2's zero-padding stem pool uses ops that ONNX export cannot express; the plain stem computes the same
            self.pad_pool = None
            padded = True
        if padded:
            self.maxpool = nn.SequentialCell([nn.Pad(((0, 0), (0, 0), (1, 1), (1, 1))),
                                              nn.MaxPool2d(kernel_size=3, stride=2, pad_mode="valid")])
        return self

    def reset_classifier(self, num_classes: int) -> None:
        """New, freshly initialised classifier for ``num_classes`` (fine-tuning)."""
        self.num_classes = num_classes
        self.classifier = self._make_classifier(num_classes)
        if isinstance(self.classifier, nn.Dense):
            _normal(self.classifier, 0.01)


def feature_levels(*levels: tuple) -> list:
    """``feature_info`` (the maps ``features_only`` returns): one (channels, reduction, module name) per map."""
    return [dict(num_chs=c, reduction=r, module=m) for c, r, m in levels]


def _normal(cell: nn.Cell, std: float) -> None:
    cell.weight.set_data(init.initializer(init.Normal(std), cell.weight.shape, cell.weight.dtype))
    if cell.bias is not None:
        cell.bias.set_data(init.initializer("zeros", cell.bias.shape, cell.bias.dtype))


def init_like_authors(net: nn.Cell, first_prefix: str = "conv1", small=lambda name, cell: False) -> None:
    """The authors' initialisation: N(0, 0.01) for the first conv, the FC layers and whatever ``small`` picks,
    N(0, 1/input-channels-per-group) for the other convs; biases zero."""
    for name, cell in net.cells_and_names():
        if isinstance(cell, nn.Dense):
            _normal(cell, 0.01)
        elif isinstance(cell, nn.Conv2d):
            tiny = name.startswith(first_prefix) or small(name, cell)
            _normal(cell, 0.01 if tiny else 1.0 / cell.weight.shape[1])
