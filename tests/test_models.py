"""Models: output shapes for the supported inputs, known parameter counts, aliases, helpers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from shieldwall.models import MODELS, build_model
from shieldwall.models.resnet import BasicBlock, ResNet
from shieldwall.models.utils import has_batchnorm, num_parameters, output_shape

IMAGE_SHAPES = [(1, 28, 28), (3, 32, 32), (1, 8, 8)]
# Listed rather than read from MODELS, so that models added later for other inputs (text,
# tabular) do not inherit these image-shape expectations.
CONV_MODELS = [
    *("cnn", "cnn_dropout", "bucketing_cnn", "lenet"),
    *("resnet18", "resnet34", "resnet50"),
    *("resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "resnet56_fedml"),
    *("vgg11", "vgg13", "vgg16", "vgg19", "densenet", "densenet121"),
]
ALL_MODELS = ["lr", "mlp", *CONV_MODELS]
BATCHNORM_FREE = {"lr", "mlp", "cnn", "cnn_dropout", "bucketing_cnn", "lenet"}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Two shared cores: intra-op threads only oversubscribe them for these tiny batches."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("shape", IMAGE_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("name", ALL_MODELS)
def test_forward_shape(name, shape):
    torch.manual_seed(0)
    model = build_model(name, shape, 7).eval()
    with torch.no_grad():
        out = model(torch.randn(2, *shape))
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize(
    "name, shape, expected",
    [
        ("cnn", (1, 28, 28), 1_663_370),  # FedML CNN_OriginalFedAvg, as in McMahan et al.
        ("cnn_dropout", (1, 28, 28), 1_199_882),  # FedML CNN_DropOut
        ("bucketing_cnn", (1, 28, 28), 1_199_882),  # the bucketing paper's Net
        ("lenet", (1, 28, 28), 61_706),  # LeNet-5 on MNIST
        ("resnet18", (3, 32, 32), 11_173_962),  # kuangliu/pytorch-cifar
        ("resnet34", (3, 32, 32), 21_282_122),
        ("resnet50", (3, 32, 32), 23_520_842),
        ("resnet20", (3, 32, 32), 272_474),  # He et al. CIFAR ResNet, 1×1 projection shortcuts
        ("resnet56", (3, 32, 32), 855_770),
        ("vgg11", (3, 32, 32), 9_231_114),
        ("vgg13", (3, 32, 32), 9_416_010),
        ("densenet121", (3, 32, 32), 6_956_298),
    ],
)
def test_known_parameter_counts(name, shape, expected):
    assert num_parameters(build_model(name, shape, 10)) == expected


@pytest.mark.parametrize(
    "alias, canonical",
    [
        ("ResNet18", "resnet18"),
        ("ResNet34", "resnet34"),
        ("ResNet50", "resnet50"),
        ("LeNet", "lenet"),
        ("lenet5", "lenet"),
        ("VGG11", "vgg11"),
        ("VGG13", "vgg13"),
        ("DenseNet", "densenet"),
        ("densenet_bc", "densenet"),
        ("DenseNet121", "densenet121"),
        ("cnn_original_fedavg", "cnn"),
        ("CNN_DropOut", "cnn_dropout"),
        ("resnet56_bottleneck", "resnet56_fedml"),
    ],
)
def test_aliases(alias, canonical):
    assert MODELS.canonical(alias) == canonical


def test_all_listed_models_registered():
    assert set(ALL_MODELS) <= set(MODELS.names())


def test_batchnorm_placement():
    for name in ALL_MODELS:
        model = build_model(name, (1, 28, 28), 10)
        assert has_batchnorm(model) == (name not in BATCHNORM_FREE), name


def test_norm_layer_can_be_swapped():
    model = ResNet(
        (3, 32, 32), 10, BasicBlock, (1, 1, 1), (16, 32, 64), lambda c: nn.GroupNorm(2, c)
    )
    assert not has_batchnorm(model)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_train_mode_backward_reaches_every_parameter():
    model = build_model("resnet20", (1, 8, 8), 10).train()
    loss = nn.functional.cross_entropy(model(torch.randn(4, 1, 8, 8)), torch.arange(4))
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_num_parameters_trainable_only():
    model = build_model("lenet", (1, 28, 28), 10)
    total = num_parameters(model)
    model.classifier[-1].weight.requires_grad_(False)
    assert num_parameters(model, trainable_only=True) == total - 84 * 10
    assert num_parameters(model) == total


def test_output_shape_restores_training_mode():
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3)).train()
    assert output_shape(model, (1, 8, 8)) == (3, 6, 6)
    assert model.training and int(model[1].num_batches_tracked) == 0


@pytest.mark.parametrize("name", CONV_MODELS)
def test_conv_models_reject_flat_inputs(name):
    with pytest.raises(ValueError, match="channels, height, width"):
        build_model(name, (64,), 10)


def test_bucketing_cnn_is_the_papers_net():
    """Eval mode equals the bucketing code's ``Net.forward`` written out (no ReLU after conv2);
    in training its first dropout drops whole feature maps, its second single units."""
    import torch.nn.functional as F

    torch.manual_seed(0)
    model = build_model("bucketing_cnn", (1, 28, 28), 10)
    conv1, conv2 = model.features[0], model.features[2]
    fc1, fc2 = model.classifier[0], model.classifier[3]
    x = torch.randn(4, 1, 28, 28)

    def paper(x):
        x = F.relu(conv1(x))
        x = F.max_pool2d(conv2(x), 2)
        x = F.relu(fc1(torch.flatten(x, 1)))
        return fc2(x)

    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), paper(x))
        pooled = model.features[:4](x)
    assert (pooled < 0).any()  # no ReLU between the second convolution and the pool

    model.train()
    torch.manual_seed(1)
    with torch.no_grad():
        maps = model.features[:5](x)  # after Dropout2d(0.25)
        hidden = model.classifier[:3](torch.randn(64, 9216))  # after Dropout(0.5)
    per_map = maps.flatten(2).eq(0).all(dim=2)  # (4, 64): a whole map dropped
    assert 0 < per_map.sum() < per_map.numel()
    kept = ~per_map
    torch.testing.assert_close(maps[kept], pooled[kept] / 0.75)
    assert not hidden.eq(0).all(dim=1).any()  # element-wise dropout: no sample's row dropped


@pytest.mark.parametrize("shape,kernel,stride", [
    ((32, 64, 24, 24), 2, None),   # the bucketing CNN's pooling
    ((5, 6, 25, 23), 2, None),     # odd sizes: the last row and column are dropped
    ((3, 4, 11, 11), 3, 2),        # overlapping windows
    ((2, 16, 8, 8), (2, 1), None),
])
def test_fast_max_pool_matches_torch_bit_for_bit(shape, kernel, stride):
    from shieldwall.models.pooling import MaxPool2d

    gen = torch.Generator().manual_seed(0)
    # after a ReLU, half the entries are zero: windows full of ties pick the same argmax
    for x in (torch.randn(shape, generator=gen), torch.randn(shape, generator=gen).relu(),
              torch.randn(shape, generator=gen).round()):
        ours, ref = MaxPool2d(kernel, stride), nn.MaxPool2d(kernel, stride)
        assert ours._fast(x)
        xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
        ya, yb = ours(xa), ref(xb)
        assert ya.is_contiguous() and torch.equal(ya, yb)
        g = torch.randn(ya.shape, generator=gen)
        ya.backward(g)
        yb.backward(g)
        assert torch.equal(xa.grad, xb.grad)


def test_fast_max_pool_falls_back_where_it_does_not_apply():
    from torch.func import grad, vmap

    from shieldwall.models.pooling import MaxPool2d

    x = torch.randn(2, 3, 8, 8)
    assert not MaxPool2d(2, padding=1)._fast(x)
    assert not MaxPool2d(2, ceil_mode=True)._fast(x)
    assert not MaxPool2d(2)._fast(x.contiguous(memory_format=torch.channels_last))
    assert not MaxPool2d(2)._fast(x[0])  # 3-D input
    # under torch.func (the batched simulator) the plain kernel runs, and vmap(grad) agrees
    pool = MaxPool2d(2)
    per_sample = vmap(grad(lambda v: pool(v.unsqueeze(0)).square().sum()))(x)
    for i in range(2):
        xi = x[i:i + 1].clone().requires_grad_()
        nn.MaxPool2d(2)(xi).square().sum().backward()
        assert torch.equal(per_sample[i], xi.grad[0])


def test_fast_max_pool_second_derivatives_match_torch():
    from shieldwall.models.pooling import MaxPool2d

    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    results = []
    for pool in (MaxPool2d(2), nn.MaxPool2d(2)):
        xi = x.clone().requires_grad_()
        (g,) = torch.autograd.grad(pool(xi * xi).square().sum(), xi, create_graph=True)
        (h,) = torch.autograd.grad(g.sum(), xi)
        results.append((g.detach(), h))
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])
