"""Writes the preset net files. The JSON files are committed; a test checks they match.

Run: python -m assets.presets.generate
"""
from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _net(name, description, inp, nodes):
    return {"format": "layerscope-net", "version": 1, "name": name, "description": description,
            "input": dict(zip(("channels", "height", "width", "classes"), inp)), "nodes": nodes}


def _n(id, kind, inputs=None, **params):
    d = {"id": id, "kind": kind}
    if params:
        d["params"] = params
    if inputs is not None:
        d["inputs"] = inputs
    return d


def lenet5():
    return _net("lenet5", "LeNet-5 for 28x28 digits: two conv/pool stages and three linear layers "
                "(ReLU and max pooling instead of the original tanh and subsampling).",
                (1, 28, 28, 10), [
                    _n("conv1", "conv2d", out_channels=6, kernel=5, padding=2), _n("relu1", "relu"),
                    _n("pool1", "maxpool2d", kernel=2),
                    _n("conv2", "conv2d", out_channels=16, kernel=5), _n("relu2", "relu"),
                    _n("pool2", "maxpool2d", kernel=2), _n("flatten", "flatten"),
                    _n("fc1", "linear", out_features=120), _n("relu3", "relu"),
                    _n("fc2", "linear", out_features=84), _n("relu4", "relu"),
                    _n("fc3", "linear", out_features=10)])


def alexnet_article():
    nodes = []
    for i, (c, k, pool, lrn) in enumerate([(96, 5, True, True), (256, 5, True, True), (384, 3, False, False),
                                           (384, 3, False, False), (256, 3, True, False)], start=1):
        nodes += [_n(f"conv{i}", "conv2d", out_channels=c, kernel=k, padding="same"), _n(f"relu{i}", "relu")]
        if lrn:
            nodes.append(_n(f"lrn{i}", "lrn", size=5, alpha=1e-4, beta=0.75, k=2.0))
        if pool:
            nodes.append(_n(f"pool{i}", "maxpool2d", kernel=2, stride=2))
    nodes += [_n("flat", "flatten"), _n("fc", "linear", out_features=10)]
    return _net(
        "alexnet-article",
        "The article's AlexNet on 28x28 MNIST: conv 96@5x5, pool, 256@5x5, pool, 384@3x3, 384@3x3, "
        "256@3x3, pool, all 'same' padding with ReLU. Departures: the article's code stops at flatten, "
        "so a 10-way linear classifier is added to train it with cross-entropy; LRN (which the article "
        "describes but its code omits) follows conv1 and conv2 as in the original AlexNet; the input is "
        "28x28 rather than resized to 227x227 (resize in the dataset settings to match the article).",
        (1, 28, 28, 10), nodes)


def alexnet():
    return _net("alexnet", "AlexNet as torchvision defines it (224x224 RGB, 1000 classes).",
                (3, 224, 224, 1000), [
                    _n("conv1", "conv2d", out_channels=64, kernel=11, stride=4, padding=2), _n("relu1", "relu"),
                    _n("pool1", "maxpool2d", kernel=3, stride=2),
                    _n("conv2", "conv2d", out_channels=192, kernel=5, padding=2), _n("relu2", "relu"),
                    _n("pool2", "maxpool2d", kernel=3, stride=2),
                    _n("conv3", "conv2d", out_channels=384, kernel=3, padding=1), _n("relu3", "relu"),
                    _n("conv4", "conv2d", out_channels=256, kernel=3, padding=1), _n("relu4", "relu"),
                    _n("conv5", "conv2d", out_channels=256, kernel=3, padding=1), _n("relu5", "relu"),
                    _n("pool5", "maxpool2d", kernel=3, stride=2),
                    _n("avgpool", "adaptive_avgpool2d", output_size=6), _n("flatten", "flatten"),
                    _n("drop1", "dropout", p=0.5), _n("fc1", "linear", out_features=4096), _n("relu6", "relu"),
                    _n("drop2", "dropout", p=0.5), _n("fc2", "linear", out_features=4096), _n("relu7", "relu"),
                    _n("fc3", "linear", out_features=1000)])


def vgg11():
    nodes, c, stage = [], 0, 1
    for v in [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"]:
        if v == "M":
            nodes.append(_n(f"pool{stage}", "maxpool2d", kernel=2, stride=2))
            stage += 1
        else:
            c += 1
            nodes += [_n(f"conv{c}", "conv2d", out_channels=v, kernel=3, padding=1), _n(f"relu{c}", "relu")]
    nodes += [_n("avgpool", "adaptive_avgpool2d", output_size=7), _n("flatten", "flatten"),
              _n("fc1", "linear", out_features=4096), _n("relu_fc1", "relu"), _n("drop1", "dropout", p=0.5),
              _n("fc2", "linear", out_features=4096), _n("relu_fc2", "relu"), _n("drop2", "dropout", p=0.5),
              _n("fc3", "linear", out_features=1000)]
    return _net("vgg11", "VGG-11 (configuration A, without batch norm) as torchvision defines it.",
                (3, 224, 224, 1000), nodes)


def resnet18():
    nodes = [_n("conv1", "conv2d", out_channels=64, kernel=7, stride=2, padding=3, bias=False),
             _n("bn1", "batchnorm2d"), _n("relu", "relu"), _n("maxpool", "maxpool2d", kernel=3, stride=2, padding=1)]
    prev, cin = "maxpool", 64
    for li, c in enumerate([64, 128, 256, 512], start=1):
        for b in range(2):
            stride = 2 if (li > 1 and b == 0) else 1
            p = f"layer{li}_{b}_"
            nodes += [_n(p + "conv1", "conv2d", [prev], out_channels=c, kernel=3, stride=stride, padding=1, bias=False),
                      _n(p + "bn1", "batchnorm2d"), _n(p + "relu1", "relu"),
                      _n(p + "conv2", "conv2d", out_channels=c, kernel=3, padding=1, bias=False),
                      _n(p + "bn2", "batchnorm2d")]
            skip = prev
            if stride != 1 or cin != c:
                nodes += [_n(p + "down_conv", "conv2d", [prev], out_channels=c, kernel=1, stride=stride, bias=False),
                          _n(p + "down_bn", "batchnorm2d")]
                skip = p + "down_bn"
            nodes += [_n(p + "add", "add", [p + "bn2", skip]), _n(p + "relu2", "relu")]
            prev, cin = p + "relu2", c
    nodes += [_n("avgpool", "adaptive_avgpool2d", output_size=1), _n("flatten", "flatten"),
              _n("fc", "linear", out_features=1000)]
    return _net("resnet18", "ResNet-18 as torchvision defines it: basic blocks with residual adds "
                "(224x224 RGB, 1000 classes).", (3, 224, 224, 1000), nodes)


PRESETS = {"lenet5": lenet5, "alexnet-article": alexnet_article, "alexnet": alexnet, "vgg11": vgg11,
           "resnet18": resnet18}


def render(name: str) -> str:
    return json.dumps(PRESETS[name](), indent=2) + "\n"


if __name__ == "__main__":
    for name in PRESETS:
        (HERE / f"{name}.json").write_text(render(name), encoding="utf-8")
        print("wrote", name)
