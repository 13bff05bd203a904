"""insightface checkpoints in and out: symbols built here in insightface's layout, compared with
MXNet's Module (insightface's own loading code) on raw uint8 RGB images."""
import importlib.util
import json
import os

import mxnet as mx
import numpy as onp
import pytest
from mxnet import np

from gluon_face.commands import convert_insightface, export_insightface
from gluon_face.graph import mxnet_compat as compat
from gluon_face.model_zoo import (
    InsightFaceError,
    MobileFaceNet,
    RawPixels,
    from_insightface,
    get_model,
    summarize,
    to_insightface,
)
from gluon_face.model_zoo.insightface import insightface_names


def _sibling(name):
    """A test module of this folder (tests are imported with --import-mode=importlib)."""
    spec = importlib.util.spec_from_file_location(
        "_" + name, os.path.join(os.path.dirname(__file__), name + ".py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


mobilefacenet_y1_symbol = _sibling("test_mobilefacenet").mobilefacenet_y1_symbol

SMALL_UNITS, SMALL_FILTERS, SMALL_SIZE, SMALL_EMB = [1, 2, 1, 1], [8, 8, 16, 16, 32], 32, 16


def legacy():
    """insightface's code runs with MXNet's legacy (non-numpy) shapes and arrays."""
    return _Legacy()


class _Legacy:
    def __enter__(self):
        # array semantics off first: MXNet refuses numpy shapes off while they are on
        self._array, self._shape = mx.util.np_array(False), mx.util.np_shape(False)
        self._array.__enter__()
        self._shape.__enter__()

    def __exit__(self, *exc):
        self._shape.__exit__(*exc)
        self._array.__exit__(*exc)


# ------------------------------------------------- insightface's fresnet, written here
def _bn(x, name, fix_gamma=False):
    return mx.sym.BatchNorm(x, fix_gamma=fix_gamma, eps=2e-5, momentum=0.9, name=name)


def _act(x, name, act):
    if act == "prelu":
        return mx.sym.LeakyReLU(x, act_type="prelu", name=name)
    return mx.sym.Activation(x, act_type=act, name=name)


def _conv(x, filters, kernel, stride, pad, name):
    return mx.sym.Convolution(x, num_filter=filters, kernel=kernel, stride=stride, pad=pad,
                              no_bias=True, name=name)


def _unit3(x, filters, stride, dim_match, name, act, se=False):
    body = _bn(x, name + "_bn1")
    body = _conv(body, filters, (3, 3), (1, 1), (1, 1), name + "_conv1")
    body = _act(_bn(body, name + "_bn2"), name + "_relu1", act)
    body = _bn(_conv(body, filters, (3, 3), stride, (1, 1), name + "_conv2"), name + "_bn3")
    if se:
        pool = mx.sym.Pooling(body, global_pool=True, kernel=(7, 7), pool_type="avg")
        gate = mx.sym.Convolution(pool, num_filter=filters, kernel=(1, 1), name=name + "_se_conv1")
        body = mx.sym.broadcast_mul(body, mx.sym.Activation(gate, act_type="sigmoid"))
    if dim_match:
        return body + x
    short = _conv(x, filters, (1, 1), stride, (0, 0), name + "_conv1sc")
    return body + _bn(short, name + "_sc")


def fresnet_symbol(units=SMALL_UNITS, filters=SMALL_FILTERS, emb_size=SMALL_EMB, act="prelu",
                   output="E", version_input=1, fc7_classes=0, fc7_bias=False, se=False,
                   normalise=True, scale=0.0078125, stem_pool=False, conv0=None):
    """insightface's fresnet (net_unit 3) with the E or FC output, optionally with fc7.

    ``version_input`` 0 is the 7x7 stride-2 ``conv0``, 1 the 3x3 stride-1 one, 2 the
    3x3 one after a BatchNorm ``bn_data`` on the raw input; ``conv0`` = (kernel,
    stride, pad) replaces the stem convolution's settings (a stem insightface has not).
    """
    data = mx.sym.Variable("data")
    if version_input == 2:
        x = mx.sym.BatchNorm(data, fix_gamma=True, eps=2e-5, momentum=0.9, name="bn_data")
    else:
        x = mx.sym.identity(data, name="id")
        if normalise:
            x = (x - 127.5) * scale
    if conv0 is None:
        conv0 = ((7, 7), (2, 2), (3, 3)) if version_input == 0 else ((3, 3), (1, 1), (1, 1))
    x = _conv(x, filters[0], *conv0, "conv0")
    x = _act(_bn(x, "bn0"), "relu0", act)
    if stem_pool:  # a layer without arrays: only running the graph can notice it
        x = mx.sym.Pooling(x, kernel=(3, 3), stride=(1, 1), pad=(1, 1), pool_type="max")
    for i, n in enumerate(units):
        for j in range(n):
            x = _unit3(x, filters[i + 1], (2, 2) if j == 0 else (1, 1), j > 0,
                       f"stage{i + 1}_unit{j + 1}", act, se)
    x = _bn(x, "bn1")
    if output == "E":
        x = mx.sym.Dropout(x, p=0.4)
    fc1 = _bn(mx.sym.FullyConnected(x, num_hidden=emb_size, name="pre_fc1"), "fc1",
              fix_gamma=True)
    if not fc7_classes:
        return fc1
    weight = mx.sym.Variable("fc7_weight", shape=(fc7_classes, emb_size))
    if fc7_bias:
        fc7 = mx.sym.FullyConnected(fc1, weight=weight, num_hidden=fc7_classes, name="fc7")
    else:
        fc7 = mx.sym.FullyConnected(mx.sym.L2Normalization(fc1) * 64.0,
                                    weight=mx.sym.L2Normalization(weight), no_bias=True,
                                    num_hidden=fc7_classes, name="fc7")
    return mx.sym.Group([mx.sym.BlockGrad(fc1), mx.sym.SoftmaxOutput(fc7, name="softmax")])


def random_params(sym, size, seed=0):
    """Random weights and BatchNorm statistics for every array of ``sym``."""
    rng = onp.random.RandomState(seed)
    with legacy():
        arg_shapes, _, aux_shapes = sym.infer_shape(data=(1, 3, size, size))
        arg, aux = {}, {}
        for name, shape in zip(sym.list_arguments(), arg_shapes):
            if name in ("data", "softmax_label"):
                continue
            if name.endswith("_gamma") and len(shape) == 1:
                value = rng.uniform(0.5, 1.5, shape)
                if "relu" in name:  # a PReLU slope
                    value = rng.uniform(0.1, 0.4, shape)
            elif name.endswith(("_beta", "_bias")):
                value = rng.normal(0, 0.2, shape)
            else:
                value = rng.normal(0, 1, shape) / onp.sqrt(onp.prod(shape[1:]))
            arg[name] = mx.nd.array(value.astype("float32"))
        for name, shape in zip(sym.list_auxiliary_states(), aux_shapes):
            value = rng.uniform(0.5, 1.5, shape) if name.endswith("_var") else \
                rng.normal(0, 0.2, shape)
            aux[name] = mx.nd.array(value.astype("float32"))
    return arg, aux


def save(prefix, sym, arg, aux, epoch=0):
    os.makedirs(os.path.dirname(str(prefix)), exist_ok=True)
    with legacy():
        mx.model.save_checkpoint(str(prefix), epoch, sym, arg, aux)
    return str(prefix)


def raw_images(n, size, seed=1):
    """uint8 RGB images as the float batch insightface feeds its Module."""
    return onp.random.RandomState(seed).randint(0, 256, (n, 3, size, size)).astype("float32")


def module_embeddings(prefix, x, epoch=0):
    """insightface's loading code: load_checkpoint, cut at fc1, Module, forward."""
    with legacy():
        sym, arg, aux = mx.model.load_checkpoint(str(prefix), epoch)
        sym = sym.get_internals()["fc1_output"]
        mod = mx.mod.Module(symbol=sym, context=mx.cpu(), label_names=None)
        mod.bind(data_shapes=[("data", x.shape)], for_training=False)
        mod.set_params(arg, aux)
        mod.forward(mx.io.DataBatch(data=[mx.nd.array(x)]), is_train=False)
        return mod.get_outputs()[0].asnumpy()


def our_embeddings(net, x):
    return net(np.array((x - 127.5) / 128)).asnumpy()


def close(got, want, tol=1e-4):
    onp.testing.assert_allclose(got, want, rtol=0, atol=tol * max(1.0, onp.abs(want).max()))


def random_net(name="faceresnet18", seed=0, **kwargs):
    net = get_model(name, **kwargs)
    net.initialize(mx.init.Xavier(magnitude=2.0))
    rng = onp.random.RandomState(seed)
    for key, p in compat.structural_params(net).items():
        if key.endswith(("running_var", "gamma")):
            p.set_data(np.array(rng.uniform(0.5, 1.5, p.shape).astype("float32")))
        elif key.endswith(("running_mean", "beta", "bias")):
            p.set_data(np.array(rng.normal(0, 0.2, p.shape).astype("float32")))
        elif key.endswith("alpha"):
            p.set_data(np.array(rng.uniform(0.1, 0.4, p.shape).astype("float32")))
    return net


# ----------------------------------------------------------------------------- the map
@pytest.mark.parametrize("depth,units,arrays,params,version_input", [
    (50, [3, 4, 14, 3], 396, 43_590_848, 1), (100, [3, 13, 30, 3], 771, 65_156_160, 1),
    (50, [3, 4, 14, 3], 396, 34_947_776, 0)])
def test_full_size_fresnet_maps_array_for_array(depth, units, arrays, params, version_input):
    sym = fresnet_symbol(units, [64, 64, 128, 256, 512], 512, version_input=version_input)
    with legacy():
        arg_shapes, _, aux_shapes = sym.infer_shape(data=(1, 3, 112, 112))
    shapes = dict(zip(sym.list_arguments(), arg_shapes))
    shapes.update(zip(sym.list_auxiliary_states(), aux_shapes))
    del shapes["data"]
    assert len(shapes) == arrays
    assert sum(int(onp.prod(s)) for n, s in zip(sym.list_arguments(), arg_shapes)
               if n != "data") == params
    net = get_model(f"faceresnet{depth}", stem="7x7" if version_input == 0 else "3x3")
    # MXNet's own shape inference gives the summary's parameter count
    assert summarize(net).params == params
    names = insightface_names(net)
    ours = compat.structural_params(net)
    assert sorted(i for _, i in names.values()) == sorted(shapes)
    for key, (kind, iname) in names.items():
        assert tuple(ours[key].shape) == tuple(shapes[iname]), key
        assert kind == ("aux" if "moving" in iname else "arg")


def test_mobilefacenet_maps_array_for_array():
    sym = mobilefacenet_y1_symbol()
    with legacy():
        arg_shapes, _, aux_shapes = sym.infer_shape(data=(1, 3, 112, 112))
    shapes = dict(zip(sym.list_arguments(), arg_shapes))
    shapes.update(zip(sym.list_auxiliary_states(), aux_shapes))
    del shapes["data"]
    net = get_model("mobilefacenet")
    names = insightface_names(net)
    assert sorted(i for _, i in names.values()) == sorted(shapes)
    ours = compat.structural_params(net)
    for key, (_, iname) in names.items():
        assert tuple(ours[key].shape) == tuple(shapes[iname]), key


# ------------------------------------------------------------------------------ import
@pytest.mark.parametrize("act,output", [("prelu", "E"), ("relu", "FC")])
def test_import_small_fresnet_matches_module(tmp_path, act, output):
    sym = fresnet_symbol(act=act, output=output)
    prefix = save(tmp_path / "model", sym, *random_params(sym, SMALL_SIZE))
    net, info = from_insightface(prefix, 0)
    assert info["model"]["name"] == "faceresnet18"
    kwargs = info["model"]["kwargs"]
    assert kwargs["layers"] == SMALL_UNITS and kwargs["channels"] == SMALL_FILTERS
    assert kwargs["act_type"] == act and kwargs.get("use_dropout", False) == (output == "E")
    assert info["image_size"] == (SMALL_SIZE, SMALL_SIZE) and info["emb_size"] == SMALL_EMB
    assert info["input_normalisation"] is True and info["fc7_weight"] is None
    assert info["max_abs_diff"] is not None and info["max_abs_diff"] < 1e-4
    x = raw_images(4, SMALL_SIZE)
    close(our_embeddings(net, x), module_embeddings(prefix, x))
    # the net is an ordinary registry model: its kwargs rebuild it
    assert isinstance(get_model(info["model"]["name"], **kwargs), type(net))


#: An input side whose maps under the 7x7 stem are odd before the last stage, as
#: insightface's 112 (56, 28, 14, 7, 4): 48 gives 24, 12, 6, 3, 2.
NET_INPUT_0_SIZE = 48


def test_import_net_input_0_matches_module_and_exports_back(tmp_path):
    sym = fresnet_symbol(version_input=0)
    prefix = save(tmp_path / "ins" / "model", sym, *random_params(sym, NET_INPUT_0_SIZE))
    net, info = from_insightface(prefix)
    kwargs = info["model"]["kwargs"]
    assert kwargs["stem"] == "7x7" and kwargs["image_size"] == NET_INPUT_0_SIZE
    assert net.feature_shape == (SMALL_FILTERS[-1], 2, 2)
    assert info["input_normalisation"] is True and info["max_abs_diff"] < 1e-4
    x = raw_images(4, NET_INPUT_0_SIZE)
    want = module_embeddings(prefix, x)
    close(our_embeddings(net, x), want)
    # back out: insightface's version_input 0 graph, which its Module loads
    out = str(tmp_path / "out" / "model")
    assert to_insightface(net, out)["max_abs_diff"] < 1e-4
    close(module_embeddings(out, x), want)
    nodes = {n["name"]: n for n in json.loads((tmp_path / "out" / "model-symbol.json")
                                              .read_text())["nodes"]}
    conv0 = nodes["conv0"]["attrs"]
    assert (conv0["kernel"], conv0["stride"], conv0["pad"]) == ("(7, 7)", "(2, 2)", "(3, 3)")
    assert nodes["id"]["op"] == "_copy"  # how MXNet saves mx.sym.identity
    assert sorted(n["op"] for n in nodes.values() if n["op"].endswith("_scalar")) == \
        ["_minus_scalar", "_mul_scalar"]
    back, back_info = from_insightface(out)
    assert back_info["model"]["kwargs"]["stem"] == "7x7"
    close(our_embeddings(back, x), want)


def test_net_input_0_map_side_fits_two_sizes(tmp_path):
    """A 2x2 last map comes from 48 or 64 under the 7x7 stem: 48 by default, 64 when told."""
    sym = fresnet_symbol(version_input=0)
    prefix = save(tmp_path / "model", sym, *random_params(sym, 64))
    net, info = from_insightface(prefix, image_size=64)
    assert info["image_size"] == (64, 64) and net.feature_shape[1:] == (2, 2)
    x = raw_images(2, 64)
    close(our_embeddings(net, x), module_embeddings(prefix, x))


def test_convert_and_export_commands_keep_the_7x7_stem(tmp_path, capsys):
    from gluon_face.training.checkpoint import load_model

    sym = fresnet_symbol(version_input=0, fc7_classes=4)
    prefix = save(tmp_path / "ins" / "model", sym, *random_params(sym, NET_INPUT_0_SIZE))
    out = tmp_path / "ckpt"
    assert convert_insightface.main([prefix, "0", str(out)]) == 0
    assert "stem=7x7" in capsys.readouterr().out
    net, _head, state = load_model(str(out))
    assert state["model"]["kwargs"]["stem"] == "7x7" and net.stem == "7x7"
    back = tmp_path / "exported" / "model"
    assert export_insightface.main([str(out), str(back)]) == 0
    x = raw_images(2, NET_INPUT_0_SIZE)
    close(module_embeddings(back, x), module_embeddings(prefix, x))


def test_import_keeps_fc7_of_a_training_symbol(tmp_path):
    sym = fresnet_symbol(fc7_classes=5)
    arg, aux = random_params(sym, SMALL_SIZE)
    prefix = save(tmp_path / "model", sym, arg, aux, epoch=7)
    net, info = from_insightface(prefix, 7)
    onp.testing.assert_array_equal(info["fc7_weight"], arg["fc7_weight"].asnumpy())
    assert info["fc7_bias"] is None
    x = raw_images(2, SMALL_SIZE)
    close(our_embeddings(net, x), module_embeddings(prefix, x, epoch=7))


def test_import_graph_without_normalisation(tmp_path):
    sym = fresnet_symbol(normalise=False)
    prefix = save(tmp_path / "model", sym, *random_params(sym, SMALL_SIZE))
    net, info = from_insightface(prefix)
    assert info["input_normalisation"] is False
    x = raw_images(2, SMALL_SIZE)
    close(our_embeddings(net, x), module_embeddings(prefix, (x - 127.5) / 128))


def test_import_mobilefacenet_y1_matches_module(tmp_path):
    sym = mobilefacenet_y1_symbol()
    prefix = save(tmp_path / "y1", sym, *random_params(sym, 112))
    net, info = from_insightface(prefix)
    assert isinstance(net, MobileFaceNet)
    assert info["model"] == {"name": "mobilefacenet",
                             "kwargs": {"emb_size": 128, "act_type": "prelu", "image_size": 112}}
    x = raw_images(2, 112)
    close(our_embeddings(net, x), module_embeddings(prefix, x))


def _bad(tmp_path, sym, arg=None, aux=None, size=SMALL_SIZE):
    if arg is None:
        arg, aux = random_params(sym, size)
    return save(tmp_path / "bad", sym, arg, aux)


def test_refusals_name_the_file_and_the_array(tmp_path):
    def refused(prefix, *words, epoch=0):
        with pytest.raises(InsightFaceError) as err:
            from_insightface(prefix, epoch)
        text = str(err.value)
        assert "\n" not in text
        for word in words:
            assert word in text, text
        return text

    refused(str(tmp_path / "nothing"), "nothing-symbol.json", "no such file")
    prefix = _bad(tmp_path, fresnet_symbol())
    refused(prefix, "bad-0003.params", "no such file", epoch=3)
    # a stem convolution insightface has not: 5x5, or 3x3 with stride 2
    refused(_bad(tmp_path, fresnet_symbol(conv0=((5, 5), (1, 1), (2, 2)))), "bad-symbol.json",
            "conv0_weight is 5x5")
    refused(_bad(tmp_path, fresnet_symbol(conv0=((3, 3), (2, 2), (1, 1)))), "bad-symbol.json",
            "conv0", "stride")
    # net_input 2: an input BatchNorm
    refused(_bad(tmp_path, fresnet_symbol(version_input=2)), "bad-symbol.json", "bn_data")
    # squeeze-excitation arrays have no place in FaceResNet
    refused(_bad(tmp_path, fresnet_symbol(se=True)), "bad-symbol.json",
            "stage1_unit1_se_conv1_weight")
    # a missing array, and a shape mismatch
    sym = fresnet_symbol()
    arg, aux = random_params(sym, SMALL_SIZE)
    del arg["stage2_unit2_conv2_weight"]
    refused(_bad(tmp_path, sym, arg, aux), "bad-0000.params", "stage2_unit2_conv2_weight",
            "missing")
    arg, aux = random_params(sym, SMALL_SIZE)
    aux["stage3_unit1_bn2_moving_var"] = mx.nd.ones((3,))
    refused(_bad(tmp_path, sym, arg, aux), "bad-0000.params", "stage3_unit1_bn2_moving_var",
            "shape")
    arg, aux = random_params(sym, SMALL_SIZE)
    arg["extra_weight"] = mx.nd.ones((2,))
    refused(_bad(tmp_path, sym, arg, aux), "bad-0000.params", "arg:extra_weight")
    # another architecture, another input scaling, no fc1
    data = mx.sym.Variable("data")
    other = mx.sym.FullyConnected(mx.sym.Convolution(data, num_filter=4, kernel=(3, 3),
                                                     name="stem"), num_hidden=4, name="fc1")
    refused(_bad(tmp_path, other), "bad-symbol.json", "unknown architecture")
    refused(_bad(tmp_path, mx.sym.FullyConnected(data, num_hidden=3, name="out")),
            "bad-symbol.json", "fc1")
    scaled = fresnet_symbol(scale=0.5)
    refused(_bad(tmp_path, scaled), "bad-symbol.json", "0.5 * x")
    # same arrays, another function: the check run refuses it
    refused(_bad(tmp_path, fresnet_symbol(stem_pool=True)), "bad-symbol.json", "differ")
    (tmp_path / "junk-symbol.json").write_text("{not json")
    (tmp_path / "junk-0000.params").write_bytes(b"junk")
    refused(str(tmp_path / "junk"), "junk-symbol.json")


# ------------------------------------------------------------------------------ export
@pytest.mark.parametrize("name,kwargs,size", [
    ("faceresnet18", dict(layers=SMALL_UNITS, channels=SMALL_FILTERS, emb_size=SMALL_EMB,
                          use_dropout=True), SMALL_SIZE),
    ("faceresnet10-demo", dict(act_type="relu", emb_size=SMALL_EMB), SMALL_SIZE),
    ("faceresnet10-demo", dict(stem="7x7", emb_size=SMALL_EMB), NET_INPUT_0_SIZE),
    ("mobilefacenet", {}, 112)])
def test_export_runs_in_insightface_module(tmp_path, name, kwargs, size):
    net = random_net(name, image_size=size, **kwargs)
    prefix = str(tmp_path / "out" / "model")
    report = to_insightface(net, prefix)
    assert report["max_abs_diff"] < 1e-4
    assert sorted(os.listdir(tmp_path / "out")) == ["model-0000.params", "model-symbol.json"]
    with legacy():
        loaded = mx.nd.load(prefix + "-0000.params")
    assert all(k.split(":")[0] in ("arg", "aux") for k in loaded)
    x = raw_images(3, size)
    want = our_embeddings(net, x)
    close(module_embeddings(prefix, x), want)
    back, info = from_insightface(prefix)
    assert info["model"]["name"] == name or name == "faceresnet10-demo"
    close(our_embeddings(back, x), want)


def test_export_refuses_other_networks(tmp_path):
    with pytest.raises(InsightFaceError, match="RawPixels"):
        to_insightface(RawPixels(), tmp_path / "m")
    assert not os.listdir(tmp_path)


# ---------------------------------------------------------------------------- commands
def test_convert_command_writes_a_checkpoint_that_loads(tmp_path, capsys):
    from gluon_face.training.checkpoint import load_model

    sym = fresnet_symbol(fc7_classes=6)
    prefix = save(tmp_path / "ins" / "model", sym, *random_params(sym, SMALL_SIZE))
    out = tmp_path / "ckpt"
    assert convert_insightface.main([prefix, "0", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    net, head, state = load_model(str(out))
    assert state["num_classes"] == 6 and state["head"]["name"] == "arcface"
    assert state["image_size"] == [SMALL_SIZE, SMALL_SIZE]
    x = raw_images(2, SMALL_SIZE)
    close(our_embeddings(net, x), module_embeddings(prefix, x))
    # and back out: the export command gives the same insightface embeddings
    back = tmp_path / "exported" / "model"
    assert export_insightface.main([str(out), str(back)]) == 0
    close(module_embeddings(back, x), module_embeddings(prefix, x))
    # outputs are never replaced without --overwrite
    assert convert_insightface.main([prefix, "0", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert export_insightface.main([str(out), str(back)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert convert_insightface.main([prefix, "0", str(out), "--overwrite"]) == 0
    assert export_insightface.main([str(out), str(back), "--overwrite"]) == 0


def test_convert_without_fc7_and_the_tools_that_read_checkpoints(tmp_path, capsys):
    from gluon_face.commands import extract

    sym = mobilefacenet_y1_symbol(emb_size=32)
    prefix = save(tmp_path / "y1", sym, *random_params(sym, 112))
    out = tmp_path / "ckpt"
    assert convert_insightface.main([prefix, "0", str(out), "--no-verify"]) == 0
    state = json.loads((out / "state.json").read_text())
    assert state["head"] is None and state["model"]["name"] == "mobilefacenet"
    assert not (out / "head.params").exists()
    import cv2

    images = tmp_path / "faces"
    images.mkdir()
    for i, image in enumerate(raw_images(3, 112).astype("uint8")):
        cv2.imwrite(str(images / f"{i}.png"), image.transpose(1, 2, 0)[:, :, ::-1])
    x = raw_images(3, 112)
    assert extract.main([str(out), str(images), str(tmp_path / "emb.npy"), "--no-progress"]) == 0
    emb = onp.load(tmp_path / "emb.npy")
    want = module_embeddings(prefix, x)
    close(emb, want / onp.linalg.norm(want, axis=1, keepdims=True))


def test_commands_refuse_bad_input_with_one_line(tmp_path, capsys):
    def fails(main, argv, *words, code=2):
        assert main(argv) == code
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0, err
        for word in words:
            assert word in err, err

    fails(convert_insightface.main, [str(tmp_path / "none"), "0", str(tmp_path / "o")],
          "none-symbol.json")
    five = fresnet_symbol(conv0=((5, 5), (1, 1), (2, 2)))
    prefix = save(tmp_path / "m", five, *random_params(five, SMALL_SIZE))
    fails(convert_insightface.main, [prefix, "0", str(tmp_path / "o")], "conv0_weight")
    fails(convert_insightface.main, [prefix, "1", str(tmp_path / "o")], "m-0001.params")
    assert not (tmp_path / "o").exists()
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep")
    good = fresnet_symbol()
    prefix = save(tmp_path / "g", good, *random_params(good, SMALL_SIZE))
    fails(convert_insightface.main, [prefix, "0", str(folder), "--overwrite"],
          "not a checkpoint folder")
    assert (folder / "notes.txt").read_text() == "keep"
    fails(export_insightface.main, [str(tmp_path / "nockpt"), str(tmp_path / "x")], "nockpt")


def test_convert_softmax_classifier_outside_numpy_mode(tmp_path):
    """A softmax fc7 (with bias) becomes the softmax head; the command runs as installed,
    without the global numpy mode the test suite sets."""
    from mxnet import npx

    from gluon_face.training.checkpoint import load_model

    sym = fresnet_symbol(fc7_classes=3, fc7_bias=True)
    arg, aux = random_params(sym, SMALL_SIZE)
    prefix = save(tmp_path / "model", sym, arg, aux)
    npx.reset_np()
    try:
        assert convert_insightface.main([prefix, "0", str(tmp_path / "ckpt")]) == 0
        assert export_insightface.main([str(tmp_path / "ckpt"), str(tmp_path / "e")]) == 0
    finally:
        npx.set_np()
    _net, head, state = load_model(str(tmp_path / "ckpt"))
    assert state["head"] == {"name": "softmax", "kwargs": {"use_bias": True}}
    params = compat.structural_params(head)
    onp.testing.assert_array_equal(params["fc7_bias"].data().asnumpy(),
                                   arg["fc7_bias"].asnumpy())
    x = raw_images(2, SMALL_SIZE)
    close(module_embeddings(tmp_path / "e", x), module_embeddings(prefix, x))


def test_full_size_r50_import_matches_module(tmp_path):
    sym = fresnet_symbol([3, 4, 14, 3], [64, 64, 128, 256, 512], 512)
    prefix = save(tmp_path / "r50", sym, *random_params(sym, 112))
    net, info = from_insightface(prefix)
    assert info["model"] == {"name": "faceresnet50", "kwargs": {
        "emb_size": 512, "act_type": "prelu", "image_size": 112, "use_dropout": True}}
    x = raw_images(2, 112)
    close(our_embeddings(net, x), module_embeddings(prefix, x))
