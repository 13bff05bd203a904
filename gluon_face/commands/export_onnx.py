"""Export a trained backbone to ONNX and check it against MXNet with onnxruntime.

    python tools/export_onnx.py runs/r18 r18.onnx

The model takes "data", a (batch, 3, H, W) float32 batch of RGB images with a
symbolic batch axis, and returns (batch, D) embeddings (not L2-normalised: the
numbers of `extract.py --no-normalize`).  With --input raw (the default) the
pixels go in as they are, 0..255, and the graph's first two nodes (Sub, Mul)
compute (pixel - 127.5) / 128; insightface's model_zoo.get_model loads such a
file as a recogniser (ArcFaceONNX, input mean 0 / std 1: its get_feat takes BGR
uint8 face crops) when the input is square, at least 112 and a multiple of 16
(not 192): for other sizes it returns None, and the command says so.  With
--input normalized the model takes (pixel - 127.5) / 128 itself.  The file is
written only if onnxruntime reproduces MXNet's embeddings on random batches (one
of 1 image, the others of --batch-size) within --atol; otherwise the exit status
is 1.  Needs onnx<1.18 and onnxruntime.

Exit status: 0 written, 1 onnxruntime's output missed --atol (nothing written),
2 bad input (one line on stderr, nothing written): an unreadable checkpoint, --atol
not a finite number >= 0, --batch-size or --trials below 1, or an output that would
overwrite the checkpoint or lie inside its folder; 130 Ctrl-C, 143 SIGTERM.
"""
import os

# The reference run binds an MXNet executor, which would announce its MKLDNN
# subgraph backend on stderr once per bind.
os.environ.setdefault("MXNET_SUBGRAPH_VERBOSE", "0")

from mxnet.base import MXNetError  # noqa: E402

from gluon_face._cli import (  # noqa: E402
    ToolParser,
    check_outputs,
    checkpoint_image_size,
    non_negative_float,
    positive_int,
    with_stop_signals,
)
from gluon_face.commands._report import fail, stopped
from gluon_face.devices import parse_ctx  # noqa: E402
from gluon_face.export import OnnxMismatchError, export_onnx  # noqa: E402


def _parse(argv):
    parser = ToolParser(
        prog="export_onnx", description=__doc__.split("\n\n")[0], allow_abbrev=False,
        epilog="Exit status: 0 written, 1 onnxruntime missed --atol (nothing written), 2 bad "
        "input (an unreadable checkpoint, bad arguments, an output inside the checkpoint "
        "folder), 130 Ctrl-C, 143 SIGTERM.")
    parser.add_argument("checkpoint", help="checkpoint folder or prefix (training's output)")
    parser.add_argument("out", help="output .onnx file (not inside the checkpoint folder)")
    parser.add_argument("--input", choices=("raw", "normalized"), default="raw",
                        help="what the model takes: raw RGB pixels 0..255, normalised inside "
                             "the graph (default; what insightface expects), or "
                             "(pixel - 127.5) / 128")
    parser.add_argument("--batch-size", type=positive_int, default=5,
                        help="images in the check batches after the first one, which holds "
                             "1 (default 5); the exported batch axis is symbolic")
    parser.add_argument("--ctx", default="cpu",
                        help="device of the MXNet reference run: cpu or gpu:N (default cpu)")
    parser.add_argument("--atol", type=non_negative_float, default=1e-4,
                        help="largest allowed max |onnx - mxnet|, a finite number >= 0 "
                             "(default 1e-4)")
    parser.add_argument("--trials", type=positive_int, default=3,
                        help="random batches compared (default 3)")
    return parser.parse_args(argv)


def main(argv=None):
    args = _parse(argv)
    try:
        from gluon_face.training.checkpoint import load_model, resolve_checkpoint

        check_outputs([args.out], [resolve_checkpoint(args.checkpoint)])
        ctx_list = parse_ctx(args.ctx)
        if len(ctx_list) != 1:
            raise ValueError(f"--ctx {args.ctx}: export runs on one device")
        net, _head, state = load_model(args.checkpoint, ctx=ctx_list)
        report = export_onnx(net, args.out, checkpoint_image_size(state),
                             batch_size=args.batch_size, ctx=ctx_list[0], atol=args.atol,
                             trials=args.trials, input=args.input)
    except KeyboardInterrupt as err:  # Ctrl-C or SIGTERM
        return stopped("export_onnx", err, 'nothing written')
    except OnnxMismatchError as err:  # the export's own check failed
        return fail("export_onnx", err, code=1)
    except (ValueError, OSError, ImportError, MXNetError) as err:
        return fail("export_onnx", err)
    renamed = ", ".join(f"{k} x{v}" for k, v in sorted(report["renamed_ops"].items())) or "none"
    what = "RGB pixels 0..255" if report["input"] == "raw" else "RGB (pixel - 127.5) / 128"
    print(f"wrote {report['path']}: input {report['input_name']} {report['input_shape']} "
          f"float32 {what} -> {report['output_shape']}")
    print(f"numpy ops renamed to legacy: {renamed} "
          f"(graph change max |diff| = {report['rewrite_max_abs_diff']:.3g})")
    sizes = report["check_batch_sizes"]
    print(f"onnxruntime vs MXNet on {len(sizes)} random batches of "
          f"{', '.join(map(str, sizes))} images: "
          f"max |diff| / max(1, max |y|) = {report['max_abs_diff']:.3g} (atol {args.atol:g})")
    loading = report["insightface"]
    if loading["task"] == "recognition":
        print(f"insightface model_zoo.get_model: {loading['reason']}")
    else:
        print(f"insightface model_zoo.get_model would not load it as a recogniser: "
              f"{loading['reason']}")
    return 0


#: What ``tools/export_onnx.py`` and ``gluon-face-export-onnx`` run: :func:`main`, which SIGTERM
#: and Ctrl-C stop with a message.
run = with_stop_signals(main)
