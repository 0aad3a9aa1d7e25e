"""The compiled merge loops of ``omendb.runs`` (numba), in a module of their own so that importing
``omendb.runs`` does not import numba (``runs._kernels`` imports this at the first merge).

Both merge sorted unique keys linearly into preallocated output arrays and return how many entries they
wrote; on equal keys the second input wins.
"""

from __future__ import annotations

import numba


@numba.njit(cache=True, nogil=True)
def merge_base(bk, bv, bl, dk, dv, dl, dlive, ok, ov, ol):  # pragma: no cover - compiled
    i = j = o = 0
    nb, nd = len(bk), len(dk)
    while i < nb or j < nd:
        if j >= nd or (i < nb and bk[i] < dk[j]):
            ok[o], ov[o], ol[o] = bk[i], bv[i], bl[i]
            o += 1
            i += 1
        else:
            if i < nb and bk[i] == dk[j]:  # replaced or deleted by the delta
                i += 1
            if dlive[j]:
                ok[o], ov[o], ol[o] = dk[j], dv[j], dl[j]
                o += 1
            j += 1
    return o


@numba.njit(cache=True, nogil=True)
def merge_runs(ak, av, al, alive, bk, bv, bl, blive, ok, ov, ol, olive):  # pragma: no cover - compiled
    i = j = o = 0
    na, nb = len(ak), len(bk)
    while i < na or j < nb:
        if j >= nb or (i < na and ak[i] < bk[j]):
            ok[o], ov[o], ol[o], olive[o] = ak[i], av[i], al[i], alive[i]
            i += 1
        else:
            if i < na and ak[i] == bk[j]:
                i += 1
            ok[o], ov[o], ol[o], olive[o] = bk[j], bv[j], bl[j], blive[j]
            j += 1
        o += 1
    return o
