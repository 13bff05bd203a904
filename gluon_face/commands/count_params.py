"""Count the parameters and multiply-accumulates of a backbone and its classification head.

    python tools/count_params.py --network faceresnet50 --emb-size 512 --num-classes 85742
    python tools/count_params.py --network faceresnet100 --image-size 128 --loss cosface

Prints one row per block (stem, stage1..4, output, head) with its output shape,
parameters and MACs per image, the totals, and the head's share of all the
parameters: with MS1M-V2's 85742 identities the head (512 x 85742 = 43.9 M) is as
large as FaceResNet-50 itself.  Nothing is initialised or run: the counts come
from the declared shapes (gluon_face.model_zoo.summarize), so any size is instant.
Batch-norm running statistics are not parameters here (insightface's convention);
the totals line gives their number.
"""
import sys

from gluon_face._cli import ToolParser


def _parse(argv):
    parser = ToolParser(prog="count_params", description=__doc__.split("\n\n")[0],
                        allow_abbrev=False)
    parser.add_argument("--network", default="faceresnet50",
                        help="registered backbone name (default faceresnet50)")
    parser.add_argument("--emb-size", type=int, default=512, help="embedding size (default 512)")
    parser.add_argument("--num-classes", type=int, default=85742,
                        help="training identities, rows of the head (default 85742, MS1M-V2)")
    parser.add_argument("--image-size", type=int, nargs="+", default=[112], metavar="N",
                        help="input side, or height width (default 112; multiples of 16)")
    parser.add_argument("--loss", default="arcface",
                        help="registered head name (default arcface); its declared "
                             "parameters are counted")
    parser.add_argument("--act-type", default="prelu", help="prelu or relu (default prelu)")
    parser.add_argument("--bn-macs", action="store_true",
                        help="count one MAC per batch-norm output element")
    parser.add_argument("--layers", action="store_true", help="also print every layer")
    return parser.parse_args(argv)


def _shape(shape):
    return "x".join(str(d) for d in shape)


def _millions(n):
    return f"{n / 1e6:.2f} M"


def _row(name, shape, params, macs):
    return f"{name:<28} {shape:>12} {params:>14,} {_millions(params):>10} {macs / 1e6:>12,.1f}"


def main(argv=None):
    args = _parse(argv)
    try:
        from gluon_face.heads import get_head
        from gluon_face.model_zoo import count_declared, get_model, summarize

        if len(args.image_size) > 2:
            raise ValueError(f"--image-size takes one or two numbers, got {args.image_size}")
        size = tuple(args.image_size) * (2 // len(args.image_size))
        net = get_model(args.network, emb_size=args.emb_size, image_size=size,
                        act_type=args.act_type)
        head = get_head(args.loss, args.emb_size, args.num_classes)
        summary = summarize(net, bn_macs=args.bn_macs)
        head_params = count_declared(head)
    except ValueError as err:
        print(f"count_params: error: {err}", file=sys.stderr)
        return 2
    # Every head multiplies the (B, E) embeddings by its (C, E) centres.
    head_macs = args.num_classes * args.emb_size

    print(f"{args.network}  input {_shape(summary.input_shape)}  embedding {args.emb_size}  "
          f"act {args.act_type}  head {args.loss} ({args.num_classes} classes)")
    print(f"{'block':<28} {'output':>12} {'params':>14} {'':>10} {'MMAC/image':>12}")
    rows = summary.layers if args.layers else summary.groups()
    for r in rows:
        name = getattr(r, "name", None) or f"{r.path} ({r.kind})"
        print(_row(name, _shape(r.out_shape), r.params, r.macs))
    print(_row(f"head {args.loss}", str(args.num_classes), head_params, head_macs))
    print("-" * 81)
    print(_row("backbone", "", summary.params, summary.macs)
          + f"  (+ {summary.states:,} BN running statistics)")
    total = summary.params + head_params
    print(_row("backbone + head", "", total, summary.macs + head_macs))
    print(f"backbone {summary.macs / 1e9:.2f} GMAC per image; head {head_params:,} parameters "
          f"= {100 * head_params / total:.1f}% of all, {head_params / summary.params:.2f}x "
          f"the backbone")
    return 0
