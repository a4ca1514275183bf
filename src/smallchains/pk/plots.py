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


def individual_fits(result, data, ids=None, ncols=4, n_points=200, per_page=24, page=0):
    """DV (points), IPRED (line) and PRED (dashed) against time, one panel per subject (the
    first output only), ``per_page`` subjects a figure: page ``page`` (from 0) of the subjects
    ``ids`` (default: every subject with observations).  When the subjects take more than one
    page, the title says which page of how many and which subjects it shows (the others are on
    the other pages: :func:`individual_fit_pages` makes them all).  A legend on every page."""
    subjects = _subjects(data, ids)
    per_page = int(per_page)
    if per_page < 1:
        raise ValueError(f"`per_page` must be >= 1, got {per_page}")
    n_pages = max(1, -(-len(subjects) // per_page))
    if not 0 <= int(page) < n_pages:
        raise ValueError(f"`page` {page} is not one of the {n_pages} page(s) (0 to {n_pages - 1})")
    lo = int(page) * per_page
    fig = _fit_panels(result, subjects[lo : lo + per_page], ncols, n_points)
    if n_pages > 1:
        shown = subjects[lo : lo + per_page]
        fig.suptitle(
            f"page {int(page) + 1} of {n_pages}: subjects {lo + 1}-{lo + len(shown)} of {len(subjects)} "
            f"(ID {shown[0].id} to {shown[-1].id})",
            fontsize=10,
        )
        fig.tight_layout()
    return fig


def individual_fit_pages(result, data, ids=None, ncols=4, n_points=200, per_page=24):
    """Every page of :func:`individual_fits` (every subject, ``per_page`` a page): a list of figures."""
    n = len(_subjects(data, ids))
    return [individual_fits(result, data, ids, ncols, n_points, per_page, k) for k in range(max(1, -(-n // per_page)))]


def _fit_panels(result, subjects, ncols, n_points):
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
    fig.supxlabel("time")
    fig.supylabel("concentration")
    fig.tight_layout()
    return fig


def goodness_of_fit(result):
    """DV against PRED and IPRED, CWRES against time and against PRED."""
    plt = _plt()
    d = result.diagnostics
    fig, axes = plt.subplots(2, 2, figsize=(8, 7))
    for ax, key in zip(axes[0], ("PRED", "IPRED")):
        ax.plot(d[key], d["DV"], "o", ms=3, alpha=0.7)
        lim = [min(np.nanmin(d[key]), np.nanmin(d["DV"])), max(np.nanmax(d[key]), np.nanmax(d["DV"]))]
        ax.plot(lim, lim, "k-", lw=1)
        ax.set_xlabel(key)
        ax.set_ylabel("DV")
    for ax, key in zip(axes[1], ("TIME", "PRED")):
        ax.plot(d[key], d["CWRES"], "o", ms=3, alpha=0.7)
        ax.axhline(0, color="k", lw=1)
        for v in (-2, 2):
            ax.axhline(v, color="k", lw=0.5, ls=":")
        ax.set_xlabel(key)
        ax.set_ylabel("CWRES")
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


def vpc(result, data, n_sim=200, bins=8, seed=0, dvid=1):
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
    ax.set_xlabel("time")
    ax.set_ylabel("concentration")
    ax.set_title(f"VPC ({n_sim} simulated data sets; bands: 90% intervals of the simulated percentiles)", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def save_figure(fig, path, dpi=110):
    """Write a figure as PNG atomically (a temporary file in the same folder, then renamed)."""
    return atomic_write(path, lambda fh: fig.savefig(fh, dpi=dpi, format="png"), suffix=".png", text=False)


def save_report(result, data, folder, n_sim=200, seed=0):
    """individual_fits.png (every subject: 24 a page, the later pages individual_fits_2.png,
    individual_fits_3.png, ...), goodness_of_fit.png and vpc.png in ``folder``; returns their paths."""
    plt = _plt()
    os.makedirs(folder, exist_ok=True)
    out = []
    for k, fig in enumerate(individual_fit_pages(result, data)):
        out.append(
            save_figure(fig, os.path.join(folder, "individual_fits.png" if k == 0 else f"individual_fits_{k + 1}.png"))
        )
        plt.close(fig)
    for name, make in (
        ("goodness_of_fit.png", lambda: goodness_of_fit(result)),
        ("vpc.png", lambda: vpc(result, data, n_sim=n_sim, seed=seed)),
    ):
        fig = make()
        out.append(save_figure(fig, os.path.join(folder, name)))
        plt.close(fig)
    return out
