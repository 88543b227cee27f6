"""For a machine without network (a lent GPU machine, an air-gapped node): the offline kit (build it
where pip reaches the package index; install it there) and the CIFAR-10 converter for the JPEG archive.

The installer's side (install, parts, convert) needs the standard library, numpy and Pillow only: it
runs on a bare target before anything else is there. The builder's side also uses packaging and pip."""
from .builder import Options, build, summary
from .cifar import convert
from .installer import Failed, install
from .target import Target

__all__ = ["Options", "build", "summary", "convert", "Failed", "install", "Target"]
