"""The offline kit and the CIFAR-10 converter (docs/gpu.md):

  python -m offline build --data ../shared/data/cifar10-jpeg.tar.xz      # make gpu-kit: .gpu-kit/parts/
  python3 -m offline install /tmp/kit-parts /tmp/kit                     # on the target, from the repository
  python -m offline convert ARCHIVE OUT [FOLDERS]                        # OUT/cifar-10-batches-py (+ image folders)
"""
import argparse
import json
import sys

import offline
from common import cli


def main(argv: list):
    parser = cli.Parser(prog="python -m offline", description=__doc__,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, parser_class=cli.Parser)
    cli.add_options(commands.add_parser("build", help="build a kit (needs the package index)",
                                        argument_default=argparse.SUPPRESS), offline.Options)
    install = commands.add_parser("install", help="install a kit: verify, unpack, install, convert, probe")
    install.add_argument("parts", help="the folder holding the parts and SHA256SUMS")
    install.add_argument("dest", help="the folder to create: site/ (packages), cifar/ (data)")
    install.add_argument("--python", default=sys.executable, help="the interpreter to install for (default: this one)")
    install.add_argument("--folders", action="store_true", help="also the images as folders: DEST/cifar-folders")
    convert = commands.add_parser("convert", help="CIFAR-10's batch files (and image folders) from the JPEG archive")
    convert.add_argument("archive", help="train/<class>/*.jpg, test/<class>/*.jpg as .tar.xz, .tar.gz or .tar")
    convert.add_argument("out", help="writes OUT/cifar-10-batches-py (pass OUT as --data-dir)")
    convert.add_argument("folders", nargs="?", help="also writes FOLDERS/train/<class>/*.jpg, FOLDERS/test/...")
    args = vars(parser.parse_args(argv))
    command = args.pop("command")
    if command == "build":
        print(offline.summary(offline.build(offline.Options(**args))))
    elif command == "install":
        record = offline.install(args["parts"], args["dest"], args["python"], args["folders"])
        print(json.dumps(record["probe"]))
        print(f"installed: export PYTHONPATH={args['dest']}/site; the data: --data-dir {args['dest']}/cifar")
    else:
        counts = offline.convert(args["archive"], args["out"], args["folders"])
        print(f"wrote {args['out']}/cifar-10-batches-py: {counts['train']:,} training and {counts['test']:,} "
              f"test images" + (f"; image folders in {args['folders']}" if args["folders"] else ""))


if __name__ == "__main__":
    try:
        cli.run(lambda: main(sys.argv[1:]))
    except offline.Failed as e:  # the kit is whole but does not run here: not a usage mistake
        cli.fail(str(e), code=1)
