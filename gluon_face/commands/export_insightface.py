"""Write a gluon_face checkpoint's backbone as an insightface MXNet checkpoint
(PREFIX-symbol.json + PREFIX-0000.params).

    python tools/export_insightface.py runs/r50 export/model
    # insightface's loader: mx.model.load_checkpoint('export/model', 0)

The symbol takes raw 0-255 RGB ("data", (N, 3, H, W) float32), normalises it in-graph
as insightface does ((x - 127.5) * 0.0078125) and ends at fc1, the embedding;
arrays carry insightface's names under arg:/aux:, in MXNet's legacy array format.
Only FaceResNet and MobileFaceNet backbones have that layout.  The files are read
back and run on two random images against the checkpoint's network (--no-verify
skips that); a difference above --atol is an error (exit 1, the files stay).

Existing PREFIX files are refused unless --overwrite.  Exit status: 0 written, 1
the check failed, 2 bad input (one line on stderr, nothing written), 130 Ctrl-C,
143 SIGTERM.
"""
import os

# The checks bind MXNet executors, which would announce their MKLDNN subgraph
# backend on stderr once per bind.
os.environ.setdefault("MXNET_SUBGRAPH_VERBOSE", "0")

from gluon_face._cli import (
    ToolParser,
    UsageError,
    check_outputs,
    int_between,
    non_negative_float,
    with_stop_signals,
)
from gluon_face.commands._report import fail, stopped


def _parse(argv):
    parser = ToolParser(
        prog="export_insightface", description=__doc__.split("\n\n")[0],
        epilog="Exit status: 0 written, 1 the check failed, 2 bad input (nothing written), "
        "130 Ctrl-C, 143 SIGTERM.")
    parser.add_argument("checkpoint", help="checkpoint folder (training's output)")
    parser.add_argument("prefix", help="output prefix: PREFIX-symbol.json, PREFIX-EPOCH.params")
    parser.add_argument("--epoch", type=int_between(0, 9999), default=0,
                        help="epoch number of the params file name (default 0)")
    parser.add_argument("--atol", type=non_negative_float, default=1e-4,
                        help="largest allowed max |symbol - network| / max(1, max |y|) "
                             "(default 1e-4)")
    parser.add_argument("--no-verify", action="store_true",
                        help="skip running the written files against the network")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace existing PREFIX files")
    return parser.parse_args(argv)


def main(argv=None):
    args = _parse(argv)
    try:
        from gluon_face.model_zoo.insightface import (
            InsightFaceError,
            insightface_names,
            insightface_paths,
            to_insightface,
        )
        from gluon_face.training.checkpoint import load_model, resolve_checkpoint

        outputs = list(insightface_paths(args.prefix, args.epoch))
        check_outputs(outputs, [resolve_checkpoint(args.checkpoint)])
        existing = [p for p in outputs if os.path.lexists(p)]
        if existing and not args.overwrite:
            raise UsageError(f"{existing[0]}: already exists (--overwrite replaces it)")
        net, _head, state = load_model(args.checkpoint)
        insightface_names(net)  # refuses a backbone without insightface's layout
    except KeyboardInterrupt as err:  # Ctrl-C or SIGTERM
        return stopped("export_insightface", err, "nothing written")
    except (ValueError, OSError, ImportError) as err:
        return fail("export_insightface", err)
    try:
        report = to_insightface(net, args.prefix, args.epoch, verify=not args.no_verify,
                                tolerance=args.atol)
    except KeyboardInterrupt as err:
        return stopped("export_insightface", err, "temporary files removed")
    except InsightFaceError as err:  # the written files do not reproduce the network
        return fail("export_insightface", err, code=1)
    except (ValueError, OSError) as err:
        return fail("export_insightface", err)
    check = ("not run" if report["max_abs_diff"] is None
             else f"symbol vs network max |diff| {report['max_abs_diff']:.3g}")
    print(f"wrote {report['symbol']} + {report['params']}: {state['model']['name']}, "
          f"{report['num_arrays']} arrays, input raw 0-255 RGB {tuple(state['image_size'])}; "
          f"{check}")
    return 0


#: What ``tools/export_insightface.py`` and ``gluon-face-export-insightface`` run.
run = with_stop_signals(main)
