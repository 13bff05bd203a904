"""Convert an insightface MXNet checkpoint (prefix-symbol.json + prefix-EPOCH.params) into a
gluon_face checkpoint folder.

    python tools/convert_insightface.py model-r100-ii/model 0 runs/r100-ii
    python tools/evaluate.py runs/r100-ii --bin lfw.bin

Reads insightface's fresnet (net_unit 3, output E or FC; r18 ... r100 and other
unit counts; net_input 1, the 3x3 stem, or net_input 0, the 7x7 stride-2 stem, which
becomes stem=7x7; the input BatchNorm of net_input 2 is refused) and fmobilefacenet
(GDC output, e.g. the y1 MobileFaceNet),
maps every array onto FaceResNet / MobileFaceNet, runs the symbol and the converted
network on two random images and refuses a difference (--no-verify skips that), and
writes OUT as a checkpoint folder that tools/evaluate.py, tools/extract.py and
tools/export_onnx.py take.  insightface's in-graph input normalisation,
(x - 127.5) * 0.0078125, is exactly our (x - 127.5) / 128 and is dropped.  A
symbol that still holds the fc7 classifier gives the checkpoint's head its class
centres (--loss names the head, default arcface; an fc7 with a bias becomes the
softmax head); without fc7 (insightface's embedding-only files) the checkpoint
holds the backbone only: evaluate, extract and export take it, and train.py
starts from it with --pretrained.

OUT must not exist or be an empty folder (--overwrite replaces an earlier
checkpoint folder, never any other folder).  Exit status: 0 written, 2 bad input
(one line on stderr naming the file and array, nothing written): a missing file,
an architecture or array that cannot be mapped, a shape mismatch, a failed check;
130 Ctrl-C, 143 SIGTERM.
"""
import os

# The checks bind MXNet executors, which would announce their MKLDNN subgraph
# backend on stderr once per bind.
os.environ.setdefault("MXNET_SUBGRAPH_VERBOSE", "0")

from gluon_face._cli import ToolParser, UsageError, check_outputs, int_between, with_stop_signals
from gluon_face.commands._report import fail, stopped

_CONFIG_NOTE = """\
# Converted from insightface's {symbol} + {params} by gluon-face-convert-insightface.
# No training run made this checkpoint, so there is no resolved TrainConfig here.
"""


def _parse(argv):
    parser = ToolParser(
        prog="convert_insightface", description=__doc__.split("\n\n")[0],
        epilog="Exit status: 0 written, 2 bad input (nothing written), 130 Ctrl-C, "
        "143 SIGTERM.")
    parser.add_argument("prefix", help="insightface checkpoint prefix (PREFIX-symbol.json)")
    parser.add_argument("epoch", type=int_between(0, 9999),
                        help="epoch of PREFIX-EPOCH.params (0 for the published models)")
    parser.add_argument("out", help="output checkpoint folder (new or empty)")
    parser.add_argument("--image-size", type=int_between(16), default=None, metavar="N",
                        help="input side (default: read from the arrays)")
    parser.add_argument("--loss", default="arcface",
                        help="head that holds an fc7 classifier's centres (default arcface)")
    parser.add_argument("--no-verify", action="store_true",
                        help="skip running the symbol against the converted network")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace OUT if it is a checkpoint folder")
    return parser.parse_args(argv)


def _check_out(args, inputs):
    out = os.path.abspath(args.out)
    if os.path.lexists(out) and not (os.path.isdir(out) and not os.listdir(out)):
        if not args.overwrite:
            raise UsageError(f"{args.out}: already exists (--overwrite replaces a checkpoint "
                             f"folder)")
        if not os.path.isdir(out) or (os.listdir(out) and
                                      not os.path.isfile(os.path.join(out, "state.json"))):
            raise UsageError(f"{args.out}: not a checkpoint folder; --overwrite replaces only "
                             f"those")
    real_out = os.path.realpath(out)
    for path in inputs:
        if os.path.realpath(path).startswith(real_out + os.sep):
            raise UsageError(f"{args.out}: the input {path} lies inside the output folder")
    check_outputs([os.path.join(args.out, "backbone.params")], inputs)


def _head(args, info):
    """``(head block, head spec, num_classes)`` holding insightface's fc7, if any."""
    import mxnet as mx

    from gluon_face.graph import mxnet_compat as compat
    from gluon_face.heads import get_head

    weight, bias = info["fc7_weight"], info["fc7_bias"]
    emb = info["emb_size"]
    if weight is None:
        if bias is not None:
            raise ValueError(f"{info['params']}: fc7_bias without fc7_weight")
        return None, None, 0
    name, kwargs = (("softmax", {"use_bias": True}) if bias is not None
                    else (args.loss, {}))
    spec = {"name": name, "kwargs": kwargs}
    head = get_head(name, emb, int(weight.shape[0]), **kwargs)
    arrays = {"fc7_weight": mx.np.array(weight)}
    if bias is not None:
        arrays["fc7_bias"] = mx.np.array(bias)
    params = compat.structural_params(head)
    if set(params) != set(arrays):
        raise ValueError(f"--loss {spec['name']}: its head holds {', '.join(sorted(params))}, "
                         f"not insightface's fc7 arrays ({', '.join(sorted(arrays))})")
    for key, value in arrays.items():
        if tuple(params[key].shape) != tuple(value.shape):
            raise ValueError(f"{info['params']}: {key} has shape {tuple(value.shape)}, the "
                             f"head needs {tuple(params[key].shape)}")
        compat.load_parameter(params[key], value, mx.cpu())
    return head, spec, int(arrays["fc7_weight"].shape[0])


def _convert(args, inputs):
    import mxnet as mx

    from gluon_face.model_zoo import from_insightface
    from gluon_face.training.checkpoint import save_checkpoint

    net, info = from_insightface(args.prefix, args.epoch, image_size=args.image_size,
                                 verify=not args.no_verify)
    with mx.util.np_shape(True), mx.util.np_array(True):
        head, head_spec, classes = _head(args, info)
        state = {"epoch": 0, "step": 0, "best_score": None, "model": info["model"],
                 "head": head_spec, "num_classes": classes, "emb_size": info["emb_size"],
                 "image_size": list(info["image_size"]),
                 "insightface": {"symbol": os.path.abspath(inputs[0]),
                                 "params": os.path.abspath(inputs[1]),
                                 "epoch": args.epoch,
                                 "input_normalisation_in_graph": info["input_normalisation"],
                                 "fc7": info["fc7_weight"] is not None,
                                 "max_abs_diff": info["max_abs_diff"]}}
        save_checkpoint(args.out, net, head, None, state,
                        _CONFIG_NOTE.format(symbol=inputs[0], params=inputs[1]))
    return info, head_spec, classes


def main(argv=None):
    args = _parse(argv)
    try:
        from gluon_face.model_zoo.insightface import insightface_paths

        inputs = list(insightface_paths(args.prefix, args.epoch))
        _check_out(args, inputs)
        info, head_spec, classes = _convert(args, inputs)
    except KeyboardInterrupt as err:  # Ctrl-C or SIGTERM
        return stopped("convert_insightface", err, "nothing written")
    except (ValueError, OSError, ImportError) as err:
        return fail("convert_insightface", err)
    model = info["model"]
    kwargs = ", ".join(f"{k}={v}" for k, v in sorted(model["kwargs"].items()))
    check = ("not run" if info["max_abs_diff"] is None
             else f"max |diff| {info['max_abs_diff']:.3g} against the symbol")
    head = (f"head {head_spec['name']} with insightface's {classes} fc7 centres"
            if info["fc7_weight"] is not None else "no fc7: backbone only")
    norm = "dropped from the graph" if info["input_normalisation"] else "not in the graph"
    print(f"wrote {args.out}: {model['name']}({kwargs}), {info['num_arrays']} arrays; {head}; "
          f"input normalisation {norm}; check {check}")
    return 0


#: What ``tools/convert_insightface.py`` and ``gluon-face-convert-insightface`` run.
run = with_stop_signals(main)
