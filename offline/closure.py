"""Which distributions a kit carries: the roots and everything their Requires-Dist lines name, exactly as
their metadata lists them, with the markers evaluated for the target. A line gated on an extra counts
only where that extra is asked for (DALI asks for nvidia-nvimgcodec-cu13[all]; nobody asks for optree's
"test" or "docs"). What the target already has is not carried: those requirements are reported.

packaging is imported where it is used: the installer's side of this package runs on a bare target,
from the standard library alone."""
from common.cli import UserError

from .target import Target


def closure(roots: list, has: list, target: Target, fetch) -> tuple:
    """(the Dists to carry, {name: ["specifier (required by)"]} left to the target, which has the
    distributions named in has). fetch(requirements) returns {canonical name: Dist} for requirements of
    names not yet fetched."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
    has = {canonicalize_name(name.strip()) for name in has}
    found, left, walked = {}, {}, set()
    pending = [(Requirement(r), "the kit") for r in roots]
    while pending:
        wanted = {}
        for req, by in pending:
            name = canonicalize_name(req.name)
            if name in has:
                left.setdefault(name, []).append(f"{req.specifier or 'any'} ({by})")
            else:
                wanted.setdefault(name, []).append((req, by))
        found.update(fetch([req for name, reqs in wanted.items() if name not in found for req, _ in reqs]))
        pending = []
        for name, reqs in wanted.items():
            dist = found[name]
            for req, by in reqs:
                if not req.specifier.contains(dist.version, prereleases=True):
                    raise UserError(f"{dist.name} {dist.version} does not satisfy {req} (required by {by}): "
                                    "no single version fits every requirement; pin one in the roots")
                if (name, frozenset(req.extras)) not in walked:
                    walked.add((name, frozenset(req.extras)))
                    pending += [(child, f"{dist.name} {dist.version}") for child in children(dist, req.extras, target)]
    return list(found.values()), left


def children(dist, extras, target: Target) -> list:
    """dist's Requires-Dist lines that hold on the target, given the extras asked for."""
    from packaging.requirements import Requirement
    out = []
    for line in dist.requires:
        req = Requirement(line)
        if req.marker is None or any(req.marker.evaluate({**target.markers(), "extra": e})
                                     for e in ("", *sorted(extras))):
            out.append(req)
    return out
