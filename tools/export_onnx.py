"""Export a trained backbone to ONNX and check it against MXNet with onnxruntime.

    python tools/export_onnx.py runs/r18 r18.onnx --batch-size 8

The model takes "data", a (B, 3, H, W) float32 batch of RGB images normalised as
(pixel - 127.5) / 128, and returns (B, D) embeddings (not normalised).  The file
is written only if onnxruntime reproduces MXNet's embeddings on random inputs
within --atol (max absolute difference); otherwise the exit status is non-zero.
Needs onnx<1.18 and onnxruntime.
"""
import argparse
import os
import sys

# The reference run binds an MXNet executor, which would announce its MKLDNN
# subgraph backend on stderr once per bind.
os.environ.setdefault("MXNET_SUBGRAPH_VERBOSE", "0")

from mxnet.base import MXNetError  # noqa: E402

from gluon_face._cli import checkpoint_image_size, error_line  # noqa: E402
from gluon_face.export import OnnxMismatchError, export_onnx  # noqa: E402
from gluon_face.training.embed import parse_ctx  # noqa: E402


def _error(err):
    print(error_line("export_onnx", err), file=sys.stderr)
    return 1


def _parse(argv):
    parser = argparse.ArgumentParser(prog="export_onnx", description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="checkpoint folder or prefix (training's output)")
    parser.add_argument("out", help="output .onnx file")
    parser.add_argument("--batch-size", type=int, default=1,
                        help="fixed batch dimension of the exported graph (default 1)")
    parser.add_argument("--ctx", default="cpu",
                        help="device of the MXNet reference run: cpu or gpu:N (default cpu)")
    parser.add_argument("--atol", type=float, default=1e-4,
                        help="largest allowed max |onnx - mxnet| (default 1e-4)")
    parser.add_argument("--trials", type=int, default=3,
                        help="random batches compared (default 3)")
    return parser.parse_args(argv)


def main(argv=None):
    args = _parse(argv)
    try:
        from gluon_face.training.checkpoint import load_model

        if args.batch_size < 1:
            raise ValueError(f"--batch-size must be >= 1, not {args.batch_size}")
        if args.trials < 1:
            raise ValueError(f"--trials must be >= 1, not {args.trials}")
        ctx_list = parse_ctx(args.ctx)
        if len(ctx_list) != 1:
            raise ValueError(f"--ctx {args.ctx}: export runs on one device")
        net, _head, state = load_model(args.checkpoint, ctx=ctx_list)
        report = export_onnx(net, args.out, checkpoint_image_size(state),
                             batch_size=args.batch_size, ctx=ctx_list[0], atol=args.atol,
                             trials=args.trials)
    except (OnnxMismatchError, ValueError, OSError, ImportError, MXNetError) as err:
        return _error(err)
    renamed = ", ".join(f"{k} x{v}" for k, v in sorted(report["renamed_ops"].items())) or "none"
    print(f"wrote {report['path']}: input {report['input_name']} {report['input_shape']} "
          f"-> {report['output_shape']}")
    print(f"numpy ops renamed to legacy: {renamed} "
          f"(graph change max |diff| = {report['rewrite_max_abs_diff']:.3g})")
    print(f"onnxruntime vs MXNet on {args.trials} random batches: "
          f"max |diff| / max(1, max |y|) = {report['max_abs_diff']:.3g} (atol {args.atol:g})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
