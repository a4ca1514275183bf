"""Diagnostic plots of a population fit (matplotlib): individual fits, goodness of fit, VPC.

Every function returns a ``matplotlib.figure.Figure`` (nothing is shown or saved unless
asked); :func:`save_report` writes them all as PNG files, each atomically.
"""

from __future__ import annotations

import os

import numpy as np

from .._atomic import atomic_write
from .report import time_after_dose


def _plt():
    try:
        import matplotlib.pyplot as plt  # (headless: matplotlib falls back to Agg)
    except ImportError:  # pragma: no cover - matplotlib is a dependency of the plots
        raise ImportError("plots need matplotlib: pip install matplotlib") from None
    return plt


def _subjects(data, ids):
    by_id = {s.id: s for s in data.subjects}
    if ids is None:
        return [s for s in data.subjects if s.n_obs]
    missing = [i for i in ids if i not in by_id]
    if missing:
        raise ValueError(f"no subject with ID {missing[0]!r} in the data")
    return [by_id[i] for i in ids]


def _curve(result, subject, params, n_points):
    st = result.model.structural
    t_obs = subject.obs_time
    t0 = subject.first_time
    ts = np.linspace(t0, max(float(t_obs.max()), t0 + 1e-9), n_points)
    p = st.param_vector(params, result.weights if st.n_weights else None)
    _, y = st.simulate(subject, p, times=ts)
    return ts, (y if y.ndim == 1 else y[:, 0])


def individual_fits(result, data, ids=None, ncols=4, n_points=200, per_page=24, page=0, time_unit=None, conc_unit=None):
    """DV (points), IPRED (line) and PRED (dashed) against time, one panel per subject (the
    first output only), ``per_page`` subjects a figure: page ``page`` (from 0) of the subjects
    ``ids`` (default: every subject with observations).  When the subjects take more than one
    page, the title says which page of how many and which subjects it shows (the others are on
    the other pages: :func:`individual_fit_pages` makes them all).  A legend on every page;
    ``time_unit`` and ``conc_unit`` label the axes."""
    subjects = _subjects(data, ids)
    per_page = int(per_page)
    if per_page < 1:
        raise ValueError(f"`per_page` must be >= 1, got {per_page}")
    n_pages = max(1, -(-len(subjects) // per_page))
    if not 0 <= int(page) < n_pages:
        raise ValueError(f"`page` {page} is not one of the {n_pages} page(s) (0 to {n_pages - 1})")
    lo = int(page) * per_page
    fig = _fit_panels(result, subjects[lo : lo + per_page], ncols, n_points, time_unit, conc_unit)
    if n_pages > 1:
        shown = subjects[lo : lo + per_page]
        fig.suptitle(
            f"page {int(page) + 1} of {n_pages}: subjects {lo + 1}-{lo + len(shown)} of {len(subjects)} "
            f"(ID {shown[0].id} to {shown[-1].id})",
            fontsize=10,
        )
        fig.tight_layout()
    return fig


def individual_fit_pages(result, data, ids=None, ncols=4, n_points=200, per_page=24, time_unit=None, conc_unit=None):
    """Every page of :func:`individual_fits` (every subject, ``per_page`` a page): a list of figures."""
    n = len(_subjects(data, ids))
    return [
        individual_fits(result, data, ids, ncols, n_points, per_page, k, time_unit, conc_unit)
        for k in range(max(1, -(-n // per_page)))
    ]


def _fit_panels(result, subjects, ncols, n_points, time_unit=None, conc_unit=None):
    plt = _plt()
    ind = result.individual_params()
    typ = result.individual_params(random_effects=False)
    n = len(subjects)
    ncols = max(1, min(ncols, n))
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols, 2.6 * nrows), squeeze=False, sharex=False)
    for ax, s in zip(axes.ravel(), subjects):
        m = s.dvid == 1
        b = np.asarray(s.blq, dtype=bool)
        ax.plot(s.obs_time[m & ~b], s.dv[m & ~b], "o", ms=3.5, color="k", label="DV")
        if np.any(m & b):  # (BLQ records: at their DV, the LLOQ by the usual convention, when it is a number)
            ax.plot(s.obs_time[m & b], s.dv[m & b], "x", ms=4, color="C3", label="BLQ")
        if s.id in ind:
            t, y = _curve(result, s, ind[s.id], n_points)
            ax.plot(t, y, "-", color="C0", label="IPRED")
            t, y = _curve(result, s, typ[s.id], n_points)
            ax.plot(t, y, "--", color="C1", label="PRED")
        ax.set_title(f"ID {s.id}", fontsize=9)
        ax.tick_params(labelsize=8)
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    axes[0, 0].legend(fontsize=7)
    fig.supxlabel(_unit("time", time_unit))
    fig.supylabel(_unit("concentration", conc_unit))
    fig.tight_layout()
    return fig


def loess(x, y, frac=2 / 3, n_points=50):
    """A LOESS smoother (Cleveland 1979: local linear fits with tricube weights over the nearest
    ``frac`` of the points, no robustness iterations), evaluated at ``n_points`` points spanning x:
    (xs, ys).  Non-finite pairs are left out; fewer than 4 points give empty arrays."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if x.size < 4 or np.ptp(x) == 0:
        return np.zeros(0), np.zeros(0)
    k = max(3, int(np.ceil(frac * x.size)))
    xs = np.linspace(x.min(), x.max(), n_points)
    ys = np.empty(n_points)
    for i, x0 in enumerate(xs):
        dist = np.abs(x - x0)
        h = np.partition(dist, k - 1)[k - 1] * 1.000001 or 1e-12
        w = np.clip(1 - (dist / h) ** 3, 0, None) ** 3
        sw = w.sum()
        mx, my = (w @ x) / sw, (w @ y) / sw
        sxx = w @ ((x - mx) ** 2)
        b = (w @ ((x - mx) * (y - my))) / sxx if sxx > 0 else 0.0
        ys[i] = my + b * (x0 - mx)
    return xs, ys


def _unit(name, unit):
    return f"{name} ({unit})" if unit else name


def goodness_of_fit(result, *, time_unit=None, conc_unit=None, log=False, outlier=3.0, smoother=True):
    """The goodness-of-fit panels a reviewer expects: DV against PRED and against IPRED (identity
    line), CWRES against TIME, time after dose (TAD) and PRED (0 and +-2 lines), |IWRES| against
    IPRED, and a normal QQ plot of CWRES; a LOESS smoother (:func:`loess`, red) on every scatter
    but the QQ plot.  ``time_unit`` and ``conc_unit`` label the axes (e.g. "h", "mg/L");
    ``log=True`` puts DV, PRED and IPRED on log axes (points <= 0 left out, their count in the
    panel's title).  Points with |CWRES| > ``outlier`` are labelled with their subject ID."""
    from scipy.stats import norm

    plt = _plt()
    d = result.diagnostics
    ids = np.asarray(d["ID"])
    fig, axes = plt.subplots(2, 4, figsize=(15, 7.5))
    axes = axes.ravel()
    cu, tu = conc_unit, time_unit

    def smooth(ax, x, y):
        if smoother:
            xs, ys = loess(x, y)
            if xs.size:
                ax.plot(xs, ys, "-", color="C3", lw=1.5, label="LOESS")

    blq = np.asarray(d["BLQ"], dtype=bool) if "BLQ" in d else np.zeros(len(ids), dtype=bool)
    for ax, key in zip(axes[:2], ("PRED", "IPRED")):
        x, y = np.asarray(d[key], dtype=float), np.asarray(d["DV"], dtype=float)
        if blq.any():  # (censored records: at their LLOQ, apart from the smoother)
            ax.plot(x[blq], y[blq], "x", ms=4, color="C3", label="BLQ (DV = LLOQ)")
        keep = np.isfinite(x) & np.isfinite(y) & ~blq
        dropped = 0
        if log:
            pos = keep & (x > 0) & (y > 0)
            dropped = int(np.sum(keep & ~pos))
            keep = pos
        x, y = x[keep], y[keep]
        ax.plot(x, y, "o", ms=3, alpha=0.6, color="C0", label="observations")
        if x.size:
            lim = [min(x.min(), y.min()), max(x.max(), y.max())]
            ax.plot(lim, lim, "k-", lw=1, label="identity")
        if log:
            ax.set_xscale("log")
            ax.set_yscale("log")
            if smoother and x.size >= 4:
                xs, ys = loess(np.log10(x), np.log10(y))
                ax.plot(10**xs, 10**ys, "-", color="C3", lw=1.5, label="LOESS")
            if dropped:
                ax.set_title(f"{dropped} point(s) <= 0 not shown", fontsize=8)
        else:
            smooth(ax, x, y)
        ax.set_xlabel(_unit(key, cu))
        ax.set_ylabel(_unit("DV", cu))
    axes[0].legend(fontsize=7)
    cw = np.asarray(d["CWRES"], dtype=float)
    for ax, key, unit in zip(axes[2:5], ("TIME", "TAD", "PRED"), (tu, tu, cu)):
        x = np.asarray(d[key], dtype=float)
        ax.plot(x, cw, "o", ms=3, alpha=0.6, color="C0")
        ax.axhline(0, color="k", lw=1)
        for v in (-2, 2):
            ax.axhline(v, color="k", lw=0.5, ls=":")
        smooth(ax, x, cw)
        out = np.flatnonzero(np.isfinite(x) & (np.abs(cw) > outlier))
        for j in out:
            ax.annotate(str(ids[j]), (x[j], cw[j]), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set_xlabel(_unit("time after dose (TAD)" if key == "TAD" else key, unit))
        ax.set_ylabel("CWRES")
    ax = axes[5]
    ip, iw = np.asarray(d["IPRED"], dtype=float), np.abs(np.asarray(d["IWRES"], dtype=float))
    ax.plot(ip, iw, "o", ms=3, alpha=0.6, color="C0")
    smooth(ax, ip, iw)
    ax.set_xlabel(_unit("IPRED", cu))
    ax.set_ylabel("|IWRES|")
    ax = axes[6]
    c = np.sort(cw[np.isfinite(cw)])
    if c.size:
        q = norm.ppf((np.arange(1, c.size + 1) - 0.5) / c.size)
        ax.plot(q, c, "o", ms=3, alpha=0.6, color="C0")
        lim = [min(q.min(), c.min()), max(q.max(), c.max())]
        ax.plot(lim, lim, "k-", lw=1)
    ax.set_xlabel("N(0, 1) quantiles")
    ax.set_ylabel("CWRES quantiles")
    ax.set_title("CWRES QQ plot", fontsize=9)
    axes[7].axis("off")
    axes[7].text(
        0.0,
        0.9,
        "red: LOESS smoother\nblack: identity, 0 and +-2\n"
        f"labels: subject IDs where |CWRES| > {outlier:g}\n{len(cw)} observations",
        fontsize=9,
        va="top",
        transform=axes[7].transAxes,
    )
    fig.suptitle(f"{result.method.upper()} fit of {result.model.structural.name}: OFV {result.ofv:.2f}")
    fig.tight_layout()
    return fig


def eta_covariates(result, data, covariates=None, categorical=None, outlier=None):
    """Each subject's random effects (its conditional mode, ETA1..ETAq, rows) against each
    baseline covariate (columns): a scatter with a LOESS smoother for a continuous covariate, box
    plots per level for a categorical one (xpose4's rule: whole numbers with at most 4 levels,
    unless ``categorical`` names them), a line at 0.  ``covariates`` default: every numeric
    covariate of the data.  Points with |eta| above ``outlier`` times that eta's sd are labelled
    with the subject's ID (None: no labels).  The way to spot a covariate relation left out of
    the model (a trend) before adding it."""
    from .tables import CATEGORICAL_LEVELS

    plt = _plt()
    m = result.model
    if not m.n_eta:
        raise ValueError("the model has no random effect to plot")
    names = list(data.covariate_names) if covariates is None else list(covariates)
    missing = [c for c in names if c not in data.covariate_names]
    if missing:
        raise ValueError(
            f"`covariates` names {missing[0]!r}, not a numeric covariate of the data {data.covariate_names}"
        )
    if not names:
        raise ValueError("the data have no numeric covariate to plot the random effects against")
    by_id = {s.id: s for s in data.subjects}
    subj = [by_id[i] for i in result.ids]
    q = m.n_eta
    fig, axes = plt.subplots(q, len(names), figsize=(3.2 * len(names), 2.6 * q), squeeze=False)
    for col, c in enumerate(names):
        v = np.array([float(s.covariate(c)) if c in s.covariates else np.nan for s in subj])
        fin = v[np.isfinite(v)]
        if categorical is not None:
            is_cat = c in categorical
        else:
            is_cat = bool(fin.size) and np.all(fin == np.round(fin)) and np.unique(fin).size <= CATEGORICAL_LEVELS
        for row in range(q):
            ax = axes[row, col]
            e = result.etas[:, row]
            if is_cat:
                levels = np.unique(fin)
                ax.boxplot([e[v == lv] for lv in levels], positions=range(len(levels)), widths=0.5)
                ax.set_xticks(range(len(levels)), [f"{lv:g}" for lv in levels])
            else:
                ax.plot(v, e, "o", ms=3, alpha=0.6, color="C0")
                xs, ys = loess(v, e)
                if xs.size:
                    ax.plot(xs, ys, "-", color="C3", lw=1.5, label="LOESS")
                if outlier is not None:
                    sd = np.nanstd(e)
                    for j in np.flatnonzero(np.abs(e) > outlier * sd):
                        ax.annotate(
                            str(result.ids[j]), (v[j], e[j]), fontsize=7, xytext=(3, 3), textcoords="offset points"
                        )
            ax.axhline(0, color="k", lw=0.8)
            if row == q - 1:
                ax.set_xlabel(c)
            if col == 0:
                ax.set_ylabel(f"ETA{row + 1} ({m.eta_names[row]})")
            ax.tick_params(labelsize=8)
    fig.suptitle(f"random effects against covariates ({result.method.upper()} fit, {len(subj)} subjects)", fontsize=10)
    fig.tight_layout()
    return fig


def jenks_edges(x, n_bins):
    """Bin edges by Jenks' natural breaks: the partition of the sorted values ``x`` into at most
    ``n_bins`` groups of consecutive values with the least total within-group sum of squares
    (Fisher's exact dynamic programme, 1958; the R vpc package's default binning).  The edges are
    the midpoints between groups, with min(x) and max(x) at the ends; ties never straddle an edge.
    Over 2,000 distinct values are first pooled into 2,000 equal-count groups."""
    x = np.sort(np.asarray(x, dtype=float)[np.isfinite(x)])
    if x.size == 0:
        raise ValueError("no finite value to bin")
    u, w = np.unique(x, return_counts=True)
    if u.size > 2000:  # (the programme is quadratic in the distinct values)
        g = np.minimum((np.cumsum(w) - 1) * 2000 // w.sum(), 1999)
        u = np.array([np.average(u[g == k], weights=w[g == k]) for k in np.unique(g)])
        w = np.array([w[g == k].sum() for k in np.unique(g)])
    k = int(min(n_bins, u.size))
    if k <= 1:
        return np.array([x[0], x[-1]])
    W = np.concatenate([[0.0], np.cumsum(w)])
    S1 = np.concatenate([[0.0], np.cumsum(w * u)])
    S2 = np.concatenate([[0.0], np.cumsum(w * u * u)])
    n = u.size

    def sse(i, j):  # the group u[i..j] (inclusive), vectorised over i
        ww = W[j + 1] - W[i]
        s1 = S1[j + 1] - S1[i]
        return (S2[j + 1] - S2[i]) - s1 * s1 / ww

    cost = np.full((k, n), np.inf)
    back = np.zeros((k, n), dtype=np.int64)
    cost[0] = sse(np.zeros(n, dtype=np.int64), np.arange(n))
    for g in range(1, k):
        for j in range(g, n):
            i = np.arange(g, j + 1)
            c = cost[g - 1, i - 1] + sse(i, j)
            b = int(np.argmin(c))
            cost[g, j], back[g, j] = c[b], i[b]
    starts = []
    j = n - 1
    for g in range(k - 1, 0, -1):
        i = back[g, j]
        starts.append(i)
        j = i - 1
    starts = sorted(starts)
    inner = [(u[i - 1] + u[i]) / 2 for i in starts]
    return np.array([x[0], *inner, x[-1]])


def _vpc_observations(P, dvid):
    """Per subject with observations of output ``dvid``: (its rows among its observations)."""
    return [np.flatnonzero(s.dvid == dvid) for s in P.subjects]


def vpc_data(
    result,
    data,
    n_sim=200,
    bins=8,
    percentiles=(5, 50, 95),
    seed=0,
    dvid=1,
    binning="jenks",
    x="TIME",
    pred_corr=False,
    stratify=None,
):
    """The numbers of a visual predictive check.

    Simulates ``n_sim`` replicates of the fitted observations (new random effects and residual
    errors, at the estimates; one population call a replicate), bins the independent variable
    ``x`` (``"TIME"``, or ``"TAD"`` for a time-after-dose VPC) and computes the ``percentiles``
    of the data and of each replicate in every bin.

    Args:
        bins: the number of bins, or the bin edges themselves (an increasing sequence).
        binning: ``"jenks"`` (the default: natural breaks, :func:`jenks_edges`, so that bins follow
            the design's clusters of sampling times instead of cutting them) or ``"quantile"``
            (equal counts).  Every observation falls in a bin (the last edge is inclusive).
        pred_corr: a prediction-corrected VPC (Bergstrand et al. 2011, AAPS J 13:143): each value
            y_ij, observed and simulated, becomes y_ij PRED_bin / PRED_ij, PRED_bin the median
            PRED of its bin (lower bound 0).
        stratify: a baseline covariate's name: one VPC per value (a dict level -> VPC).

    Returns:
        dict: ``bin_x`` (median x of each bin; ``bin_time`` is the same), ``edges``, ``n_obs``
        (observations per bin), ``observed`` (n_bins, n_percentiles), ``simulated`` (n_sim,
        n_bins, n_percentiles), ``percentiles``, ``x``, ``pred_corr``, ``binning``; with
        ``stratify``, {level: that dict}.  Under the M1 rule BLQ records are left out, of the
        data and of the simulations alike.  A fit with censored observations (M3, M4) keeps them,
        as the censored VPC of Bergstrand et al. (2009, AAPS J 11:371) does: a simulated value
        below its record's LLOQ is censored as the data are, a percentile (observed or simulated)
        that falls below the LLOQ is NaN (it is not known), and ``blq_observed`` (n_bins,) and
        ``blq_simulated`` (n_sim, n_bins) give the fraction below the LLOQ per bin, ``lloq`` the
        LLOQ (the median over the censored records) and ``points_blq`` the censored
        observations' (x, LLOQ).  Records without an LLOQ of their own (the observed ones) take
        that median.
    """
    from .importance import problem_for
    from .npde import simulate_observations

    if binning not in ("jenks", "quantile"):
        raise ValueError(f"`binning` must be 'jenks' or 'quantile', got {binning!r}")
    if x not in ("TIME", "TAD"):
        raise ValueError(f"`x` must be 'TIME' or 'TAD', got {x!r}")
    n_sim = int(n_sim)
    if n_sim < 2:
        raise ValueError(f"`n_sim` must be >= 2, got {n_sim}")
    P = problem_for(result, data)
    try:
        rows = _vpc_observations(P, dvid)
        if not sum(r.size for r in rows):
            raise ValueError(f"no observation of DVID {dvid} to check")
        sims = simulate_observations(P, result.x, n_sim, seed)
        preds = P.predictions(result.x, None) if pred_corr else None
        groups = {}
        for i, s in enumerate(P.subjects):
            key = None
            if stratify is not None:
                if stratify not in s.subject.covariates:
                    raise ValueError(f"`stratify`: subject {s.subject.id} has no covariate {stratify!r}")
                key = float(s.subject.covariate(stratify))
            groups.setdefault(key, []).append(i)
    finally:
        P.close()

    def one(members):
        xs, ys, pr, sim, cs, ls = [], [], [], [], [], []
        for i in members:
            s, r = P.subjects[i], rows[i]
            t = s.t[r]
            xs.append(time_after_dose(s.subject, t) if x == "TAD" else t)
            ys.append(s.y[r])
            sim.append(sims[i][:, r])
            cs.append(s.code[r] % 2 == 1)  # (M3, M4 censored: codes 1 and 3)
            ls.append(s.lim[r])
            if pred_corr:
                pr.append(preds[i][0][r])
        xv, yv, sv = np.concatenate(xs), np.concatenate(ys), np.concatenate(sim, axis=1)
        cens, lims = np.concatenate(cs), np.concatenate(ls)
        keep = np.isfinite(xv)  # (TAD before the first dose)
        xv, yv, sv, cens, lims = xv[keep], yv[keep], sv[:, keep], cens[keep], lims[keep]
        lloq = float(np.median(lims[cens])) if cens.any() else None
        if lloq is not None:
            lims = np.where(np.isfinite(lims), lims, lloq)
            below = sv < lims[None, :]
        if np.ndim(bins):
            edges = np.asarray(bins, dtype=float)
            if edges.ndim != 1 or edges.size < 2 or np.any(np.diff(edges) <= 0):
                raise ValueError("`bins` as edges must be an increasing sequence of two or more numbers")
        elif binning == "jenks":
            edges = jenks_edges(xv, int(bins))
        else:
            edges = np.unique(np.quantile(xv, np.linspace(0, 1, int(bins) + 1)))
        nb = max(len(edges) - 1, 1)
        which = np.clip(np.searchsorted(edges, xv, side="right") - 1, 0, nb - 1)
        if pred_corr:
            pv = np.concatenate(pr)[keep]
            med = np.array([np.median(pv[which == b]) if np.any(which == b) else np.nan for b in range(nb)])
            with np.errstate(divide="ignore", invalid="ignore"):
                factor = np.where(pv > 0, med[which] / pv, np.nan)
            yv = yv * factor
            sv = sv * factor[None, :]
            if lloq is not None:
                lims = lims * factor
        n_obs = np.bincount(which, minlength=nb)
        floor = None
        if lloq is not None:  # (censored values sort below everything; their percentiles are unknown)
            floor = np.array([np.median(lims[which == b]) if n_obs[b] else np.nan for b in range(nb)])
            yv_c = np.where(cens, -np.inf, yv)
            sv_c = np.where(below, -np.inf, sv)

        def pct(y):
            with np.errstate(invalid="ignore"):  # (-inf - -inf between two censored values: NaN, unknown)
                out = np.array(
                    [
                        np.nanpercentile(y[which == b], percentiles) if n_obs[b] else np.full(len(percentiles), np.nan)
                        for b in range(nb)
                    ]
                )
            if floor is not None:
                out = np.where(out < floor[:, None], np.nan, out)
            return out

        def pct_all(S):
            """(n_sim, n_bins, n_percentiles): ``pct`` of every replicate, one call per bin."""
            out = np.full((S.shape[0], nb, len(percentiles)), np.nan)
            with np.errstate(invalid="ignore"):
                for b in range(nb):
                    if n_obs[b]:
                        out[:, b, :] = np.nanpercentile(S[:, which == b], percentiles, axis=1).T
            if floor is not None:
                out = np.where(out < floor[None, :, None], np.nan, out)
            return out

        bin_x = np.array([np.median(xv[which == b]) if n_obs[b] else np.nan for b in range(nb)])
        if lloq is not None:
            pts = (xv[~cens], yv[~cens])
            extra = {
                "lloq": lloq,
                "blq_observed": np.bincount(which, weights=cens, minlength=nb) / np.maximum(n_obs, 1),
                "blq_simulated": np.stack([np.bincount(which, weights=below[k], minlength=nb) for k in range(n_sim)])
                / np.maximum(n_obs, 1),
                "points_blq": (xv[cens], lims[cens]),
            }
            yv, sv = yv_c, sv_c
        else:
            pts, extra = (xv, yv), {}
        return {
            "bin_x": bin_x,
            "bin_time": bin_x,
            "edges": edges,
            "n_obs": n_obs,
            "observed": pct(yv),
            "simulated": pct_all(sv),
            "percentiles": tuple(percentiles),
            "x": x,
            "pred_corr": bool(pred_corr),
            "binning": "edges" if np.ndim(bins) else binning,
            "points": pts,
            **extra,
        }

    if stratify is None:
        return one(groups[None])
    return {level: one(members) for level, members in sorted(groups.items())}


def vpc(
    result,
    data,
    n_sim=200,
    bins=8,
    seed=0,
    dvid=1,
    time_unit=None,
    conc_unit=None,
    binning="jenks",
    x="TIME",
    pred_corr=False,
    stratify=None,
    log=False,
):
    """A visual predictive check (:func:`vpc_data`): per bin, the data's 5th, 50th and 95th
    percentiles (lines) over the 90% intervals of the same percentiles in the simulated replicates
    (bands: blue for the 5th and 95th, red for the median), the observations as grey points and
    the bins' edges as ticks on the x axis; a legend says what each line and band is.  One panel a
    stratum with ``stratify``; ``x="TAD"`` for a time-after-dose VPC; ``pred_corr`` for a
    prediction-corrected one; ``log`` for a log y axis.  With censored observations (M3, M4) the
    LLOQ is a dashed line, the BLQ records are red crosses at their LLOQ, percentiles below the
    LLOQ are not drawn, and a panel beneath gives the fraction below the LLOQ per bin, observed
    over the simulated 90% interval."""
    plt = _plt()
    v = vpc_data(
        result,
        data,
        n_sim=n_sim,
        bins=bins,
        seed=seed,
        dvid=dvid,
        binning=binning,
        x=x,
        pred_corr=pred_corr,
        stratify=stratify,
    )
    panels = [(None, v)] if stratify is None else list(v.items())
    censored = any("lloq" in d for _, d in panels)
    fig, axes = plt.subplots(
        2 if censored else 1,
        len(panels),
        figsize=(7 * len(panels), 7.2 if censored else 4.8),
        squeeze=False,
        gridspec_kw={"height_ratios": [3, 1.3]} if censored else None,
    )
    colors = {0: "C0", 1: "C3", 2: "C0"}
    for col, (level, d) in enumerate(panels):
        ax = axes[0, col]
        t = d["bin_x"]
        ax.plot(*d["points"], ".", color="0.6", ms=2, label="observations", zorder=1)
        if "lloq" in d:
            ax.plot(*d["points_blq"], "x", color="C3", ms=3, lw=0.5, label="BLQ records (at their LLOQ)", zorder=1)
            ax.axhline(d["lloq"], color="k", ls="--", lw=0.8, label=f"LLOQ {d['lloq']:.4g}")
            bx = axes[1, col]
            lo, hi = np.percentile(d["blq_simulated"], [5, 95], axis=0)
            bx.fill_between(t, lo, hi, color="C3", alpha=0.2, lw=0, label="simulated: 90% interval")
            bx.plot(t, d["blq_observed"], "-o", color="C3", ms=3, label="observed")
            bx.set_ylim(-0.02, 1.02)
            bx.set_ylabel("fraction < LLOQ")
            bx.set_xlabel(_unit("time after dose (TAD)" if d["x"] == "TAD" else "time", time_unit))
            bx.legend(fontsize=7, loc="best")
        elif censored:
            axes[1, col].set_visible(False)
        pcts = d["percentiles"]
        for k, p in enumerate(pcts):
            color = colors.get(k, "C0") if len(pcts) == 3 else "C0"
            lo, hi = np.percentile(d["simulated"][:, :, k], [5, 95], axis=0)
            band = f"simulated P{p}: 90% interval"
            ax.fill_between(t, lo, hi, color=color, alpha=0.2, lw=0, label=band)
            ax.plot(t, d["observed"][:, k], "-o", color=color, ms=3, label=f"observed P{p}")
        for e in d["edges"]:
            ax.axvline(e, color="0.85", lw=0.6, zorder=0)
        if log:
            ax.set_yscale("log")
        xl = "time after dose (TAD)" if d["x"] == "TAD" else "time"
        ax.set_xlabel(_unit(xl, time_unit))
        yl = "prediction-corrected concentration" if d["pred_corr"] else "concentration"
        ax.set_ylabel(_unit(yl, conc_unit))
        what = "pcVPC" if d["pred_corr"] else "VPC"
        head = f"{what}, {stratify} = {level:g}: " if level is not None else f"{what}: "
        ax.set_title(
            f"{head}{n_sim} simulated data sets, {len(d['edges']) - 1} bins ({d['binning']}), "
            f"{int(d['n_obs'].sum())} observations",
            fontsize=9,
        )
        ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return fig


def save_figure(fig, path, dpi=110):
    """Write a figure as PNG atomically (a temporary file in the same folder, then renamed)."""
    return atomic_write(path, lambda fh: fig.savefig(fh, dpi=dpi, format="png"), suffix=".png", text=False)


def _has_eta_panels(result, data):
    return bool(result.model.n_eta) and bool(data.covariate_names) and result.etas.size > 0


def save_report(result, data, folder, n_sim=200, seed=0, time_unit=None, conc_unit=None):
    """individual_fits.png (every subject: 24 a page, the later pages individual_fits_2.png,
    individual_fits_3.png, ...), goodness_of_fit.png, vpc.png and, with random effects and
    covariates, eta_covariates.png in ``folder`` (axes labelled with ``time_unit`` and
    ``conc_unit``); returns their paths."""
    units = dict(time_unit=time_unit, conc_unit=conc_unit)
    plt = _plt()
    os.makedirs(folder, exist_ok=True)
    out = []
    for k, fig in enumerate(individual_fit_pages(result, data, **units)):
        out.append(
            save_figure(fig, os.path.join(folder, "individual_fits.png" if k == 0 else f"individual_fits_{k + 1}.png"))
        )
        plt.close(fig)
    for name, make in (
        ("goodness_of_fit.png", lambda: goodness_of_fit(result, **units)),
        ("vpc.png", lambda: vpc(result, data, n_sim=n_sim, seed=seed, **units)),
    ) + ((("eta_covariates.png", lambda: eta_covariates(result, data)),) if _has_eta_panels(result, data) else ()):
        fig = make()
        out.append(save_figure(fig, os.path.join(folder, name)))
        plt.close(fig)
    return out
