"""The built-in layer kinds. Every module is built out-of-place: per-layer backward hooks
break on in-place ReLU and ``+=`` (pytorch issue 61519)."""
from __future__ import annotations

from engine.net.registry import Param, register_layer


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def _shape_str(shape) -> str:
    return "x".join(str(d) for d in shape)


def _needs_map(kind: str, shape) -> str | None:
    if len(shape) != 3:
        return (f"{kind} needs a CxHxW feature map but gets a flat vector of {shape[0]} features; "
                "place it before the flatten")
    return None


def _window_check(kind, kernel, stride, padding, dilation, shape) -> str | None:
    bad = _needs_map(kind, shape)
    if bad:
        return bad
    kh, kw = _pair(kernel)
    dh, dw = _pair(dilation)
    sh, sw = _pair(stride)
    if isinstance(padding, str):
        ph = pw = 0 if padding == "valid" else None
    else:
        ph, pw = _pair(padding)
    _, h, w = shape
    ekh, ekw = dh * (kh - 1) + 1, dw * (kw - 1) + 1
    if ph is None:  # "same": output equals input, any kernel fits
        return None
    if ekh > h + 2 * ph or ekw > w + 2 * pw:
        ksz = f"{kh}" if kh == kw else f"{kh}x{kw}"
        extra = f" (padded to {h + 2 * ph}x{w + 2 * pw})" if ph or pw else ""
        return f"kernel {ksz} is larger than its {h}x{w} input{extra}"
    oh = (h + 2 * ph - ekh) // sh + 1
    ow = (w + 2 * pw - ekw) // sw + 1
    if oh <= 0 or ow <= 0:
        return f"the feature map shrinks to {oh}x{ow}; use a smaller kernel or stride"
    return None


# ---- convolution ---------------------------------------------------------------------

def _conv_check(p, shapes):
    shape = shapes[0]
    bad = _window_check("conv2d", p["kernel"], p["stride"], p["padding"], p["dilation"], shape)
    if bad:
        return bad
    cin, g = shape[0], p["groups"]
    if cin % g or p["out_channels"] % g:
        return (f"groups {g} must divide both the {cin} input channels and the "
                f"{p['out_channels']} output channels")
    if p["padding"] == "same" and any(s != 1 for s in _pair(p["stride"])):
        return "padding 'same' needs stride 1"
    return None


@register_layer(
    "conv2d", family="convolution", help="2-D convolution: slides learned kernels over the feature map",
    params=(
        Param("out_channels", "int", 16, "number of output channels (kernels)", min=1, max=65536),
        Param("kernel", "int_pair", 3, "kernel size, n or [h, w]", min=1, max=255),
        Param("stride", "int_pair", 1, "step between kernel positions", min=1, max=255),
        Param("padding", "int_or_choice", 0, "zero padding per side, or 'same' / 'valid'",
              min=0, max=255, choices=("same", "valid")),
        Param("dilation", "int_pair", 1, "spacing between kernel taps", min=1, max=64),
        Param("groups", "int", 1, "channel groups (groups = channels is depthwise)", min=1, max=65536),
        Param("bias", "bool", True, "learn a bias per output channel"),
    ),
    key_params=("out_channels", "kernel", "stride", "padding"), check=_conv_check)
def _conv2d(p, shapes):
    import torch.nn as nn

    return nn.Conv2d(shapes[0][0], p["out_channels"], _pair(p["kernel"]), _pair(p["stride"]),
                     p["padding"] if isinstance(p["padding"], str) else _pair(p["padding"]),
                     _pair(p["dilation"]), p["groups"], p["bias"])


# ---- pooling ---------------------------------------------------------------------------

_POOL_PARAMS = (
    Param("kernel", "int_pair", 2, "window size, n or [h, w]", min=1, max=255),
    Param("stride", "int", 0, "step between windows; 0 means the kernel size", min=0, max=255),
    Param("padding", "int", 0, "padding per side (at most half the kernel)", min=0, max=127),
    Param("ceil_mode", "bool", False, "round the output size up instead of down"),
)


def _pool_args(p):
    k = _pair(p["kernel"])
    s = k if p["stride"] == 0 else (p["stride"], p["stride"])
    return k, s, p["padding"]


def _pool_check(kind):
    def check(p, shapes):
        k, s, pad = _pool_args(p)
        if pad * 2 > min(k):
            return f"padding {pad} is more than half the {k[0]}x{k[1]} window"
        return _window_check(kind, k, s, pad, 1, shapes[0])
    return check


@register_layer("maxpool2d", family="pooling", help="max pooling: keeps the largest value in each window",
                params=_POOL_PARAMS, key_params=("kernel", "stride"), check=_pool_check("maxpool2d"))
def _maxpool(p, shapes):
    import torch.nn as nn

    k, s, pad = _pool_args(p)
    return nn.MaxPool2d(k, s, pad, ceil_mode=p["ceil_mode"])


@register_layer("avgpool2d", family="pooling", help="average pooling: the mean of each window",
                params=_POOL_PARAMS, key_params=("kernel", "stride"), check=_pool_check("avgpool2d"))
def _avgpool(p, shapes):
    import torch.nn as nn

    k, s, pad = _pool_args(p)
    return nn.AvgPool2d(k, s, pad, ceil_mode=p["ceil_mode"])


@register_layer("adaptive_avgpool2d", family="pooling",
                help="adaptive average pooling to a fixed output size, whatever the input size",
                params=(Param("output_size", "int_pair", 1, "output height and width", min=1, max=1024),),
                key_params=("output_size",), check=lambda p, s: _needs_map("adaptive_avgpool2d", s[0]))
def _adaptive_avgpool(p, shapes):
    import torch.nn as nn

    return nn.AdaptiveAvgPool2d(_pair(p["output_size"]))


# ---- normalisation -------------------------------------------------------------------------

@register_layer(
    "lrn", family="normalisation",
    help="local response normalisation across neighbouring channels (AlexNet)",
    params=(
        Param("size", "int", 5, "number of neighbouring channels", min=1, max=64),
        Param("alpha", "float", 1e-4, "scale", min=0.0, max=10.0),
        Param("beta", "float", 0.75, "exponent", min=0.0, max=10.0),
        Param("k", "float", 2.0, "additive constant", min=0.0, max=100.0),
    ), key_params=("size",), check=lambda p, s: _needs_map("lrn", s[0]))
def _lrn(p, shapes):
    import torch.nn as nn

    return nn.LocalResponseNorm(p["size"], p["alpha"], p["beta"], p["k"])


@register_layer(
    "batchnorm2d", family="normalisation", help="batch normalisation per channel",
    params=(
        Param("eps", "float", 1e-5, "added to the variance", min=0.0, max=1.0),
        Param("momentum", "float", 0.1, "running-statistics momentum", min=0.0, max=1.0),
        Param("affine", "bool", True, "learn a scale and shift per channel"),
    ), check=lambda p, s: _needs_map("batchnorm2d", s[0]))
def _batchnorm(p, shapes):
    import torch.nn as nn

    return nn.BatchNorm2d(shapes[0][0], p["eps"], p["momentum"], p["affine"])


# ---- activation ----------------------------------------------------------------------------

@register_layer("relu", family="activation", help="rectified linear unit: max(0, x)")
def _relu(p, shapes):
    import torch.nn as nn

    return nn.ReLU(inplace=False)


@register_layer("leaky_relu", family="activation", help="leaky ReLU: x, or slope * x when negative",
                params=(Param("negative_slope", "float", 0.01, "slope for negative inputs", min=0.0, max=1.0),),
                key_params=("negative_slope",))
def _leaky_relu(p, shapes):
    import torch.nn as nn

    return nn.LeakyReLU(p["negative_slope"], inplace=False)


@register_layer("sigmoid", family="activation", help="logistic sigmoid: 1 / (1 + e^-x)")
def _sigmoid(p, shapes):
    import torch.nn as nn

    return nn.Sigmoid()


@register_layer("tanh", family="activation", help="hyperbolic tangent")
def _tanh(p, shapes):
    import torch.nn as nn

    return nn.Tanh()


@register_layer("gelu", family="activation", help="Gaussian error linear unit",
                params=(Param("approximate", "choice", "none", "exact, or the tanh approximation",
                              choices=("none", "tanh")),))
def _gelu(p, shapes):
    import torch.nn as nn

    return nn.GELU(approximate=p["approximate"])


@register_layer("softmax", family="activation",
                help="softmax over channels/classes: turns scores into probabilities")
def _softmax(p, shapes):
    import torch.nn as nn

    return nn.Softmax(dim=1)


# ---- linear ------------------------------------------------------------------------------

@register_layer("linear", family="linear",
                help="fully connected layer (a CxHxW input is flattened first)",
                params=(Param("out_features", "int", 10, "number of outputs", min=1, max=1 << 20),
                        Param("bias", "bool", True, "learn a bias per output")),
                key_params=("out_features",))
def _linear(p, shapes):
    n = 1
    for d in shapes[0]:
        n *= d
    from engine.net.modules import FlatLinear

    return FlatLinear(n, p["out_features"], p["bias"])


@register_layer("flatten", family="linear", help="flattens a CxHxW feature map into a vector")
def _flatten(p, shapes):
    import torch.nn as nn

    return nn.Flatten(1)


# ---- regularisation ------------------------------------------------------------------------

@register_layer("dropout", family="regularisation", help="randomly zeroes inputs while training",
                params=(Param("p", "float", 0.5, "probability of zeroing an element", min=0.0, max=0.99),),
                key_params=("p",))
def _dropout(p, shapes):
    import torch.nn as nn

    return nn.Dropout(p["p"], inplace=False)


# ---- merge -------------------------------------------------------------------------------

def _add_check(p, shapes):
    first = shapes[0]
    for s in shapes[1:]:
        if tuple(s) != tuple(first):
            return ("add needs inputs of the same shape but gets "
                    + " and ".join(_shape_str(x) for x in shapes))
    return None


def _concat_check(p, shapes):
    ranks = {len(s) for s in shapes}
    if len(ranks) != 1 or (3 in ranks and len({tuple(s[1:]) for s in shapes}) != 1):
        return ("concat needs inputs that differ only in channels but gets "
                + " and ".join(_shape_str(x) for x in shapes))
    return None


@register_layer("add", family="merge", help="element-wise sum of its inputs (ResNet skip connection)",
                min_inputs=2, max_inputs=16, check=_add_check)
def _add(p, shapes):
    from engine.net.modules import Add

    return Add()


@register_layer("concat", family="merge", help="joins its inputs along the channel dimension",
                min_inputs=2, max_inputs=16, check=_concat_check)
def _concat(p, shapes):
    from engine.net.modules import Concat

    return Concat()


# ---- imported (hidden: specs hold it, the palette does not offer it) ------------------------

def shapes_text(shapes) -> str:
    """Per-sample shapes as text, e.g. "16x14x14, 16x14x14" (an empty shape is "")."""
    return ", ".join(_shape_str(s) for s in shapes)


def _opaque_measure(p, shapes):
    """An opaque node's figures are those measured when its model was imported (stored in its
    params); they hold for the input shapes it was measured with (``in_shapes``, when given)."""
    if p["in_shapes"] and p["in_shapes"] != shapes_text(shapes):
        return ("bad", f"was measured on inputs {p['in_shapes']} when its model was imported but now gets "
                       f"{shapes_text(shapes) or 'none'}; import the model again")
    try:
        out = tuple(int(d) for d in p["out_shape"].split("x")) if p["out_shape"] else ()
    except ValueError:
        return ("bad", f"'out_shape' must be sizes joined by x (e.g. 16x14x14), not {p['out_shape']!r}")
    if any(d <= 0 for d in out):
        return ("bad", f"the output shrinks to {p['out_shape']}")
    return ("ok", out, p["params"], p["flops"], p["bwd_flops"])


@register_layer(
    "opaque", family="imported", hidden=True, min_inputs=0, max_inputs=4096, measure=_opaque_measure,
    help="an operation of an imported PyTorch model that no layer kind matches exactly; its figures "
         "were measured when the model was imported",
    params=(
        Param("op", "text", help="the operation: a module type (nn.Hardswish), a function (torch.cat) "
                                 "or a tensor method (view)"),
        Param("module", "text", "", "the module's qualified name in its model (layer1.0.conv1), if any"),
        Param("in_shapes", "text", "", "per-sample input shapes it was measured on (empty: not checked)"),
        Param("out_shape", "text", help="per-sample output shape, e.g. 16x14x14"),
        Param("params", "int", 0, "parameters it holds that no earlier node holds", min=0),
        Param("flops", "int", 0, "forward FLOPs per sample (FlopCounterMode)", min=0),
        Param("bwd_flops", "int", 0, "backward FLOPs per sample (FlopCounterMode)", min=0),
    ))
def _opaque(p, shapes):
    from engine.errors import SpecError

    raise SpecError(f"an opaque node ({p['op']}) comes from an imported model: profile it from its source")
