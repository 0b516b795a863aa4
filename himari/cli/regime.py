"""``himari regime fit`` / ``himari regime label``: fit the tactical pipeline (features + Student-t HMM) on a training
window, then label a later period with the online posterior and evaluate it against the rule labeller."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from himari.errors import DataError

log = logging.getLogger("himari.regime")

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

GAUSSIAN_SUPERVISED_FILE = "gaussian_supervised_hmm.json"
GAUSSIAN_EM_FILE = "gaussian_em_hmm.json"
STUDENT_EM_FILE = "student_t_em_hmm.json"


@click.group("regime")
def regime_group() -> None:
    """Rule labels, Student-t HMM regimes, evaluation and plots."""


def _train_observations(pipe: Any, bars: Any, train_start: str, train_end: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:

    from himari.data.bars import to_utc_timestamp

    history = bars.between(None, train_end)
    z, labels = pipe.regime_observations(history)
    ts = history.timestamps_ns
    m = (ts >= to_utc_timestamp(train_start).value) & (ts < to_utc_timestamp(train_end).value)
    seg = history.gap_before[m].copy()
    seg[0] = True
    return z[m], labels[m], seg


@regime_group.command("fit")
@click.option("--data", "data_path", default="BTCUSDT", show_default=True)
@click.option("--train-start", required=True)
@click.option("--train-end", required=True, help="Exclusive; no bar at or after it is read.")
@click.option("--out", required=True, help="Output directory for the fitted pipeline and baselines.")
@click.option("--method", type=click.Choice(["supervised", "em"]), default="supervised", show_default=True,
              help="Student-t HMM fit: from the rule labels, or EM (ECM for dof) started from them.")
@click.option("--dof", type=float, default=None, help="Fix the Student-t degrees of freedom (default: estimated).")
@click.option("--em-iters", default=15, show_default=True)
@click.option("--seed", default=0, show_default=True, help="Seed of the hmmlearn Gaussian baseline.")
def fit_cmd(data_path: str, train_start: str, train_end: str, out: str, method: str, dof: float | None, em_iters: int, seed: int) -> None:
    """Fit features, filters and the regime HMM on [train-start, train-end) and save them (JSON, no pickle),
    plus Gaussian-HMM baselines fitted on the same observations."""
    import time

    import numpy as np

    from himari.data.bundled import resolve_data_path
    from himari.data.loaders import load_bars
    from himari.regime.student_t_hmm import GAUSSIAN_DOF, StudentTHMM, gaussian_from_hmmlearn
    from himari.tactical.pipeline import TacticalConfig, TacticalPipeline
    from himari.utils.io import atomic_write_json
    from himari.utils.rundir import create_run_dir

    t0 = time.perf_counter()
    path = resolve_data_path(data_path)
    bars = load_bars(path).between(None, train_end)
    cfg = TacticalConfig.parse({}, hmm_fit=method, hmm_dof=dof, hmm_em_iters=em_iters)
    log.info("regime fit: fitting features, filters and the Student-t HMM (%s) on %s [%s, %s)", method, bars.symbol,
             train_start, train_end)
    pipe = TacticalPipeline(cfg).fit(bars, train_start, train_end)
    log.info("regime fit: pipeline fitted in %.0f s; fitting the Gaussian baselines", time.perf_counter() - t0)
    out_dir = Path(out)
    create_run_dir(out_dir, "regime fit", {"tactical": cfg.to_dict(), "train_start": train_start, "train_end": train_end},
                   seed, {"data": path})
    pipe.save(out_dir)
    z, labels, seg = _train_observations(pipe, bars, train_start, train_end)
    gauss_sup = StudentTHMM.fit_supervised(z, labels, 4, dof=GAUSSIAN_DOF * 10, segment_start=seg)
    gauss_sup.meta["fit"] = "supervised-gaussian"
    if method == "em":
        gauss_sup.fit_em(z, seg, n_iter=em_iters, estimate_dof=False)
        from himari.regime.student_t_hmm import map_states_by_means

        gauss_sup.state_to_regime = map_states_by_means(gauss_sup.means)
    gauss_sup.save(out_dir / GAUSSIAN_SUPERVISED_FILE)
    summary: dict[str, Any] = {"train_bars": len(z), "student_t": pipe.hmm.to_dict()}
    try:
        from hmmlearn.hmm import GaussianHMM

        log.info("regime fit: hmmlearn Gaussian EM and Student-t EM baselines (%.0f s so far)", time.perf_counter() - t0)

        ok = np.isfinite(z).all(axis=1)
        seg_ids = np.cumsum(seg)[ok]  # hmmlearn sequences = contiguous segments (rows with observations)
        lengths = np.unique(seg_ids, return_counts=True)[1]
        gem = GaussianHMM(4, covariance_type="full", n_iter=50, random_state=seed).fit(z[ok], lengths=lengths)
        gaussian_from_hmmlearn(gem).save(out_dir / GAUSSIAN_EM_FILE)
        summary["hmmlearn_gaussian_em"] = "fitted"
        # Student-t EM started from the hmmlearn solution, for a like-for-like unsupervised comparison
        st = gaussian_from_hmmlearn(gem)
        st.dofs = np.full(4, 10.0)
        st.fit_em(z, seg, n_iter=em_iters, estimate_dof=True)
        from himari.regime.student_t_hmm import map_states_by_means

        st.state_to_regime = map_states_by_means(st.means)
        st.save(out_dir / STUDENT_EM_FILE)
    except ImportError:  # pragma: no cover - hmmlearn is in the "baselines" extra
        summary["hmmlearn_gaussian_em"] = "hmmlearn not installed"
    train_post = pipe.hmm.regime_posterior(z, seg)
    from himari.regime.evaluate import agreement

    summary["train_agreement"] = agreement(train_post.argmax(axis=1), labels)
    atomic_write_json(out_dir / "fit_summary.json", summary)
    h = pipe.hmm
    click.echo(f"fitted on {bars.symbol} [{train_start}, {train_end}): {len(z)} bars, method {method}, in {time.perf_counter() - t0:.1f}s")
    from himari.regime.labeller import REGIME_NAMES

    for k in range(h.n_states):
        name = REGIME_NAMES[int(h.state_to_regime[k])]
        click.echo(f"  state {k} -> {name:<8} mean(logvol,trend,ret)={np.round(h.means[k], 3).tolist()} dof={h.dofs[k]:.2f} stay={h.transmat[k, k]:.4f}")
    click.echo(f"  train agreement with labeller: {summary['train_agreement']['overall'] * 100:.1f}%")
    click.echo(f"saved {out_dir}/tactical_pipeline.json (+ Gaussian baselines, fit_summary.json, run.json)")


@regime_group.command("label")
@click.option("--model", "model_dir", required=True, help="Directory written by `himari regime fit`.")
@click.option("--data", "data_path", default="BTCUSDT", show_default=True)
@click.option("--start", required=True, help="First labelled bar; must not precede the fit window's end.")
@click.option("--end", default=None, help="Exclusive end of the labelled period.")
@click.option("--out", required=True, help="Output table (.parquet/.csv/.csv.gz); a .png plot and .json summary go next to it.")
@click.option("--hysteresis", default=0.1, show_default=True, help="Margin for switching the reported regime.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def label_cmd(model_dir: str, data_path: str, start: str, end: str | None, out: str, hysteresis: float, as_json: bool) -> None:
    """Online regime posterior P(regime_t | data <= t) on [start, end), evaluated against the rule labeller."""
    import numpy as np
    import pandas as pd

    from himari.data.bars import to_utc_timestamp
    from himari.data.loaders import load_bars
    from himari.data.store import write_frame
    from himari.regime.evaluate import agreement, format_summary, persistence
    from himari.regime.labeller import REGIME_NAMES
    from himari.regime.plot import plot_regimes
    from himari.regime.student_t_hmm import StudentTHMM, apply_hysteresis
    from himari.tactical.pipeline import TacticalPipeline
    from himari.utils.io import atomic_write_json, to_json

    mdir = Path(model_dir)
    pipe = TacticalPipeline.load(mdir)
    bars = load_bars(data_path).between(None, end)
    start_ts = to_utc_timestamp(start)
    tf = pipe.transform(bars, eval_start=start)  # raises LeakageError if start < fit end
    m = tf.timestamps_ns >= start_ts.value
    if not m.any():
        raise DataError(f"no bars at or after --start {start}", data_path)
    z, labels = pipe.regime_observations(bars)
    seg = bars.gap_before.copy()
    post = tf.regime_posterior.astype(np.float64)
    reported = apply_hysteresis(post[m], hysteresis)
    lab = labels[m]
    summary: dict[str, Any] = {
        "model": str(mdir),
        "period": {"start": str(bars.index[m][0]), "end": str(bars.index[m][-1]), "bars": int(m.sum())},
        "agreement": agreement(reported, lab),
        "agreement_argmax": agreement(post[m].argmax(axis=1), lab)["overall"],
    }
    # held-out log-likelihood of the HMM observations, same rows for every model (burn-in: rows before start)
    lls: dict[str, float] = {}
    models = {"student_t (pipeline)": pipe.hmm}
    for name, fname in (("gaussian (same fit method)", "gaussian_supervised_hmm.json"),
                        ("gaussian EM (hmmlearn)", "gaussian_em_hmm.json"),
                        ("student_t EM", "student_t_em_hmm.json")):
        if (mdir / fname).exists():
            models[name] = StudentTHMM.load(mdir / fname)
    n_obs = int((np.isfinite(z).all(axis=1) & m).sum())
    for name, model in models.items():
        res = model.filter(z, seg)
        lls[name] = float(res.step_loglik[m].sum() / max(n_obs, 1))
    summary["loglik_per_bar"] = lls
    summary["persistence"] = {"model (hysteresis)": persistence(reported), "model (argmax)": persistence(post[m].argmax(axis=1)),
                              "labeller": persistence(lab[lab >= 0])}
    st, ga = lls["student_t (pipeline)"], lls.get("gaussian (same fit method)")
    if ga is not None:
        better = "beats" if st > ga else "does NOT beat"
        summary["verdict"] = f"Student-t HMM {better} the Gaussian HMM fitted the same way on held-out log-likelihood ({st:.4f} vs {ga:.4f} per bar)"
        if "student_t EM" in lls and "gaussian EM (hmmlearn)" in lls:
            a, b = lls["student_t EM"], lls["gaussian EM (hmmlearn)"]
            summary["verdict"] += f"; unsupervised: Student-t EM {a:.4f} vs hmmlearn Gaussian EM {b:.4f} ({'better' if a > b else 'NOT better'})"
    frame = pd.DataFrame(
        {
            "close": bars.close[m],
            "label": lab,
            "label_name": [REGIME_NAMES[v] if v >= 0 else "UNKNOWN" for v in lab],
            **{f"p_{n.lower()}": post[m, k] for k, n in enumerate(REGIME_NAMES)},
            "regime": [REGIME_NAMES[v] for v in reported],
            "confidence": post[m].max(axis=1),
            "valid": tf.valid[m],
        },
        index=bars.index[m],
    )
    out_path = Path(out)
    write_frame(frame, out_path)
    stem = out_path.name.split(".")[0]
    png = out_path.with_name(stem + ".png")
    plot_regimes(tf.timestamps_ns[m], bars.close[m], post[m], png, f"{bars.symbol}: regime posterior (model fitted "
                 f"{pipe.fit_window.to_dict()['start'][:10]}..{pipe.fit_window.to_dict()['end'][:10]})", labels=lab)
    atomic_write_json(out_path.with_name(stem + ".summary.json"), summary)
    if as_json:
        click.echo(to_json(summary))
    else:
        click.echo(f"labelled {int(m.sum())} bars of {bars.symbol} from {start}: wrote {out_path}, {png}")
        click.echo(format_summary(summary))


@regime_group.command("rules")
@click.option("--data", "data_path", default="BTCUSDT", show_default=True)
@click.option("--out", required=True)
def rules_cmd(data_path: str, out: str) -> None:
    """Rule-based labels only (trailing percentiles), for every bar."""
    import pandas as pd

    from himari.data.loaders import load_bars
    from himari.data.store import write_frame
    from himari.regime.labeller import REGIME_NAMES, label_regimes

    bars = load_bars(data_path)
    lab = label_regimes(bars)
    frame = pd.DataFrame({"label": lab, "label_name": [REGIME_NAMES[v] if v >= 0 else "UNKNOWN" for v in lab]}, index=bars.index)
    write_frame(frame, out)
    shares = {n: float((lab == k).mean()) for k, n in enumerate(REGIME_NAMES)}
    click.echo(f"wrote {out}: {len(lab)} rows; shares " + ", ".join(f"{k} {v * 100:.1f}%" for k, v in shares.items()))


def register(cli: click.Group) -> None:
    cli.add_command(regime_group)
