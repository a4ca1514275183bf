"""Diagnostic plots of a population fit (matplotlib): individual fits, goodness of fit, VPC.

Every function returns a ``matplotlib.figure.Figure`` (nothing is shown or saved unless
asked); :func:`save_report` writes them all as PNG files, each atomically.
"""

from __future__ import annotations

import os

import numpy as np

from .._atomic import atomic_write


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
        ax.plot(s.obs_time[m], s.dv[m], "o", ms=3.5, color="k", label="DV")
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

    for ax, key in zip(axes[:2], ("PRED", "IPRED")):
        x, y = np.asarray(d[key], dtype=float), np.asarray(d["DV"], dtype=float)
        keep = np.isfinite(x) & np.isfinite(y)
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


def vpc_data(result, data, n_sim=200, bins=8, percentiles=(5, 50, 95), seed=0, dvid=1):
    """The numbers of a visual predictive check.

    Simulates ``n_sim`` replicates of the data set from the fitted model (new random
    effects and residual errors), bins the observation times at their quantiles, and returns
    a dict: ``bin_time`` (median time of each bin), ``observed`` (n_bins, n_percentiles)
    percentiles of the data, and ``simulated`` (n_sim, n_bins, n_percentiles) of each replicate.
    """
    from .simulate import simulate_data

    sims, _ = simulate_data(
        result.model,
        data,
        result.x,
        n=n_sim,
        seed=seed,
        ss_tol=result.settings.get("ss_tol"),
        time_varying=result.settings.get("time_varying", "nocb"),
    )

    def collect(pop):
        t, y = [], []
        for s in pop.subjects:
            m = (s.dvid == dvid) & (np.asarray(s.blq) == 0)
            t.append(s.obs_time[m])
            y.append(s.dv[m])
        return np.concatenate(t), np.concatenate(y)

    t_obs, y_obs = collect(data)
    edges = np.unique(np.quantile(t_obs, np.linspace(0, 1, bins + 1)))
    which = np.clip(np.searchsorted(edges, t_obs, side="right") - 1, 0, len(edges) - 2)
    nb = len(edges) - 1
    bin_time = np.array([np.median(t_obs[which == b]) if np.any(which == b) else np.nan for b in range(nb)])

    def pct(y):
        return np.array(
            [
                np.percentile(y[which == b], percentiles) if np.any(which == b) else np.full(len(percentiles), np.nan)
                for b in range(nb)
            ]
        )

    observed = pct(y_obs)
    simulated = np.stack([pct(collect(p)[1]) for p in sims])
    return {
        "bin_time": bin_time,
        "edges": edges,
        "observed": observed,
        "simulated": simulated,
        "percentiles": tuple(percentiles),
    }


def vpc(result, data, n_sim=200, bins=8, seed=0, dvid=1, time_unit=None, conc_unit=None):
    """A visual predictive check: the data's 5th, 50th and 95th percentiles per time bin (lines)
    over the 90% intervals of the same percentiles in simulated replicates (bands)."""
    plt = _plt()
    v = vpc_data(result, data, n_sim=n_sim, bins=bins, seed=seed, dvid=dvid)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    t = v["bin_time"]
    for k, (p, color) in enumerate(zip(v["percentiles"], ("C0", "C3", "C0"))):
        lo, hi = np.percentile(v["simulated"][:, :, k], [5, 95], axis=0)
        ax.fill_between(t, lo, hi, color=color, alpha=0.2, lw=0)
        ax.plot(t, v["observed"][:, k], "-o", color=color, ms=3, label=f"observed P{p}")
    for s in data.subjects:
        m = s.dvid == dvid
        ax.plot(s.obs_time[m], s.dv[m], ".", color="0.6", ms=2)
    ax.set_xlabel(_unit("time", time_unit))
    ax.set_ylabel(_unit("concentration", conc_unit))
    ax.set_title(f"VPC ({n_sim} simulated data sets; bands: 90% intervals of the simulated percentiles)", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def save_figure(fig, path, dpi=110):
    """Write a figure as PNG atomically (a temporary file in the same folder, then renamed)."""
    return atomic_write(path, lambda fh: fig.savefig(fh, dpi=dpi, format="png"), suffix=".png", text=False)


def save_report(result, data, folder, n_sim=200, seed=0, time_unit=None, conc_unit=None):
    """individual_fits.png (every subject: 24 a page, the later pages individual_fits_2.png,
    individual_fits_3.png, ...), goodness_of_fit.png and vpc.png in ``folder`` (axes labelled with
    ``time_unit`` and ``conc_unit``); returns their paths."""
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
    ):
        fig = make()
        out.append(save_figure(fig, os.path.join(folder, name)))
        plt.close(fig)
    return out
