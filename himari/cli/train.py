"""``himari train``: train a policy on bundled or given data and write a run directory with a model bundle.

PPO kinds (mlp, lstm, transformer, multiasset, sizer) train here; the offline kinds (mlp-classifier, cql, dt, cgdt,
flag-trader) are dispatched to ``himari.training.offline.train_offline``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from himari.agents.registry import OFFLINE_KINDS, PPO_KINDS, STACK_KINDS
from himari.errors import ConfigError, RunDirError

SECTION_FILE_KEYS = {"ppo", "policy", "sim", "tactical", "offline", "sizing", "risk"}


def _from_run_json(payload: dict[str, Any], path: str) -> dict[str, Any]:
    """The :class:`TrainRunConfig` fields of a train run's ``run.json`` (PPO kinds store them as they are; offline
    kinds store their resolved options, labels and simulator)."""
    config = payload["config"]
    if "policy" in config:
        return dict(config)
    if "policy_kind" in config:
        options = dict(config.get("options") or {})
        for key in ("labels", "sim"):
            if config.get(key) is not None:
                options[key] = config[key]
        return {"policy": config["policy_kind"], "data": config.get("data") or ["BTCUSDT"],
                "train_start": config["train_start"], "train_end": config["train_end"], "val_end": config["val_end"],
                "steps": config["steps"], "seed": payload.get("seed", 0), "offline": options}
    raise ConfigError(f"{path}: the run.json of a {payload.get('command')!r} run is not a train config "
                      "(himari run / himari wfo --config take walk-forward runs)")


def _load_config_file(path: str | None) -> dict[str, Any]:
    """A train config: ``RUN/config.json`` or ``RUN/run.json`` of an earlier train run (every
    :class:`TrainRunConfig` field) or a file of override sections (ppo, policy, sim, tactical, sizing, risk,
    offline)."""
    if path is None:
        return {}
    try:
        payload = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read JSON config: {exc}") from None
    if not isinstance(payload, dict):
        raise ConfigError(f"{path}: a train config is a JSON object")
    if "command" in payload and isinstance(payload.get("config"), dict):  # a run directory's run.json
        return _from_run_json(payload, path)
    if set(payload) <= SECTION_FILE_KEYS:  # sections only
        return {("policy_config" if k == "policy" else k): v for k, v in payload.items()}
    return payload


def _echo_offline_summary(run: Path) -> None:
    """A few lines from an offline run's metrics.json: model vs majority class, simulator return vs always-long."""
    if not (run / "metrics.json").exists():
        return
    metrics = json.loads((run / "metrics.json").read_text())
    for period in ("validation", "test"):
        cls = metrics.get("classification", {}).get(period)
        if not cls:
            continue
        model, base = cls.get("model", cls), cls.get("majority_baseline", {})
        parts = [f"{k} {model[k]:.3f}" + (f" (majority {base[k]:.3f})" if k in base else "")
                 for k in ("balanced_accuracy", "macro_f1", "log_loss") if isinstance(model.get(k), int | float)]
        if parts:
            click.echo(f"{period}: " + ", ".join(parts))
    click.echo(f"wrote {run}/metrics.json and the model bundle {run}/bundle")


@click.command("train")
@click.option("--policy", "policy_kind", default=None, type=click.Choice(PPO_KINDS + STACK_KINDS + OFFLINE_KINDS),
              help="Policy kind to train (required unless --config holds one).")
@click.option("--data", "data_specs", multiple=True, default=("BTCUSDT",), show_default=True,
              help="Bundled symbol (BTCUSDT, ETHUSDT, SOLUSDT) or OHLCV file; repeat for several assets.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Run directory to write.")
@click.option("--train-start", default="2023-01-01", show_default=True, help="First bar of the training window.")
@click.option("--train-end", default="2024-01-01", show_default=True, help="End (exclusive) of the training window.")
@click.option("--val-end", default="2024-04-01", show_default=True,
              help="End (exclusive) of the validation window that starts at --train-end (model selection only).")
@click.option("--steps", default=100_000, show_default=True, type=click.IntRange(min=1),
              help="PPO: environment steps; offline kinds: training samples processed.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--resume", is_flag=True, help="Continue an interrupted run in --out (same config required).")
@click.option("--pretrain-synthetic", default=0, show_default=True, type=click.IntRange(min=0),
              help="PPO: steps of pre-training on synthetic stress scenarios before fine-tuning on real data "
                   "(compared on validation against training from scratch; the better is kept).")
@click.option("--num-envs", default=32, show_default=True, type=click.IntRange(min=1), help="PPO: parallel episodes.")
@click.option("--n-steps", default=None, type=click.IntRange(min=1), help="PPO: rollout length per update.")
@click.option("--learning-rate", default=None, type=float, help="PPO: initial learning rate.")
@click.option("--episode-length", default=None, type=click.IntRange(min=1), help="Simulator episode length (bars).")
@click.option("--window", default=None, type=click.IntRange(min=1), help="Observation window (bars).")
@click.option("--size", type=click.Choice(["small", "seeds"]), default="small", show_default=True,
              help="transformer: small CPU default or the seeds' 3 layers / 4 heads / d=256 / 100-step context.")
@click.option("--config", "config_file", default=None, type=click.Path(dir_okay=False, exists=True),
              help="RUN/config.json or RUN/run.json of an earlier run (options given here override it), or a JSON "
                   "file of sections "
                   "ppo, policy, sim, tactical, sizing, risk (field overrides) and offline (options of the offline "
                   "kinds: labels, model, sim, tactical, behaviour_policy, loop, ...). A typo is an error.")
@click.option("--no-tensorboard", is_flag=True, help="Metrics only as metrics.jsonl (no TensorBoard events).")
@click.option("--mlflow", "mlflow_uri", default=None, is_flag=False, flag_value="mlruns", metavar="[STORE]",
              help="PPO kinds: also track in MLflow (a local store directory, default ./mlruns, or a tracking URI).")
def train_cmd(
    policy_kind: str, data_specs: tuple[str, ...], out: str, train_start: str, train_end: str, val_end: str,
    steps: int, seed: int, resume: bool, pretrain_synthetic: int, num_envs: int, n_steps: int | None,
    learning_rate: float | None, episode_length: int | None, window: int | None, size: str,
    config_file: str | None, no_tensorboard: bool, mlflow_uri: str | None,
) -> None:
    """Train a policy; writes run.json, config.json, metrics, checkpoints and RUN/bundle for `himari backtest --run RUN`."""
    from himari.training.config import TrainRunConfig

    if resume and config_file is None and (Path(out) / "run.json").exists():
        config_file = str(Path(out) / "run.json")  # --resume continues the run's own config (options override it)
    base = _load_config_file(config_file)
    ctx = click.get_current_context()
    options = {"policy": policy_kind, "data": list(data_specs), "train_start": train_start, "train_end": train_end,
               "val_end": val_end, "steps": steps, "seed": seed, "pretrain_synthetic": pretrain_synthetic,
               "num_envs": num_envs}
    params = {"policy_kind": "policy", "data_specs": "data"}
    # a config file is the base; options given on the command line (not their defaults) override it
    explicit = {params.get(name, name): options[params.get(name, name)] for name in ctx.params
                if params.get(name, name) in options
                and (ctx.get_parameter_source(name) != click.core.ParameterSource.DEFAULT
                     or params.get(name, name) not in base)}
    explicit = {k: v for k, v in explicit.items() if v is not None}
    ppo = dict(base.get("ppo", {}))
    if n_steps is not None:
        ppo["n_steps"] = n_steps
    if learning_rate is not None:
        ppo["learning_rate"] = learning_rate
    sim = dict(base.get("sim", {}))
    if episode_length is not None:
        sim["episode_length"] = episode_length
    if window is not None:
        sim["window"] = window
    policy_cfg = dict(base.get("policy_config", {}))
    kind = explicit.get("policy", base.get("policy"))
    if kind is None:
        raise click.UsageError("give --policy (or a --config holding a policy)")
    if kind == "transformer" and size == "seeds":
        from himari.agents.ppo.config import TransformerConfig

        policy_cfg = {**TransformerConfig.seeds().to_dict(), **policy_cfg}
    cfg = TrainRunConfig.parse({**base, **explicit, "ppo": ppo, "sim": sim, "policy_config": policy_cfg})
    if cfg.policy in OFFLINE_KINDS:
        from himari.training.offline import train_offline

        run = train_offline(policy_kind=cfg.policy, data_specs=list(cfg.data), out=out, train_start=cfg.train_start,
                            train_end=cfg.train_end, val_end=cfg.val_end, steps=cfg.steps, seed=cfg.seed,
                            resume=resume, options=cfg.offline or None)
        _echo_offline_summary(Path(run))
        return
    from himari.agents.training import prepare_training_data
    from himari.config import config_hash
    from himari.training.ppo import train_ppo, train_stack
    from himari.utils.io import atomic_write_json
    from himari.utils.rundir import create_run_dir, load_run_meta
    from himari.utils.threads import configure_torch_threads

    configure_torch_threads()
    if cfg.policy == "multiasset" and len(cfg.data) < 2:
        raise ConfigError("--policy multiasset needs several --data (e.g. --data BTCUSDT --data ETHUSDT --data SOLUSDT)")
    resolved = cfg.to_dict()
    out_dir = Path(out)
    if resume:
        meta = load_run_meta(out_dir)
        if meta.get("config_hash") != config_hash(resolved):
            previous = dict(meta.get("config") or {})
            changed = sorted(k for k in set(previous) | set(resolved) if previous.get(k) != resolved.get(k))
            if changed != ["steps"]:
                raise RunDirError(f"{out_dir}: --resume with a different config than the run's: "
                                  f"{', '.join(changed)} differ (only --steps may grow, to extend a run)")
            if cfg.steps < int(previous["steps"]):
                raise RunDirError(f"{out_dir}: the run was set up for {previous['steps']} steps; --steps "
                                  f"{cfg.steps} cannot shrink it (give more to extend it)")
            if cfg.policy in STACK_KINDS or cfg.pretrain_synthetic:
                raise RunDirError(f"{out_dir}: only a plain PPO run can be extended with more --steps")
            click.echo(f"extending {out_dir} from {previous['steps']} to {cfg.steps} steps: training continues from "
                       "its last checkpoint; the learning-rate and entropy schedules are stretched over the new total")
    elif (out_dir / "run.json").exists():
        raise RunDirError(f"{out_dir}: already holds a run; use --resume to continue it or choose a new --out")
    data = prepare_training_data(list(cfg.data), cfg.train_start, cfg.train_end, cfg.val_end, cfg.tactical or None)
    create_run_dir(out_dir, "train", resolved, cfg.seed, data_files={s: p for s, p in data.data_files.items()},
                   extra={"data_summary": data.describe()})
    atomic_write_json(out_dir / "config.json", resolved)  # himari train --config RUN/config.json reruns it
    from himari.utils.tracking import TrackingConfig, activate, open_tracker

    tracker = open_tracker(TrackingConfig(mlflow=True, mlflow_tracking_uri=mlflow_uri) if mlflow_uri else None,
                           out_dir, f"train: {out_dir.name}", resolved)
    if cfg.policy in STACK_KINDS:
        with activate(tracker):
            stacked = train_stack(data, out_dir, steps=cfg.steps, seed=cfg.seed, num_envs=cfg.num_envs,
                                  ppo_overrides=cfg.ppo, policy_config=cfg.policy_config,
                                  sim_overrides=cfg.sim_overrides(), resume=resume)
        if tracker is not None:
            tracker.finish(stacked.metrics, [out_dir / "metrics.json"])
        sm = stacked.metrics
        l2 = (f"L2 {sm['direction_global_step']} steps" if "direction_global_step" in sm
              else f"L2 {cfg.policy_config.get('direction_kind')} fitted offline")
        click.echo(f"trained stack: {l2}, L3 {sm['sizer_global_step']} steps; best validation mean reward "
                   f"L2 {sm.get('direction_best_metric', 'n/a')}, L3 {sm['sizer_best_metric']}")
        click.echo(f"bundle: {stacked.bundle_dir}")
        return
    with activate(tracker):
        result = train_ppo(
            cfg.policy, data, out_dir, steps=cfg.steps, seed=cfg.seed, resume=resume, num_envs=cfg.num_envs,
            ppo_overrides=cfg.ppo, policy_config=cfg.policy_config, sim_overrides=cfg.sim_overrides(),
            pretrain_synthetic_steps=cfg.pretrain_synthetic, tensorboard=not no_tensorboard,
        )
    m = result.metrics
    if tracker is not None:
        tracker.finish(m, [out_dir / "metrics.json"])
    if result.train.history:
        click.echo(f"trained {cfg.policy}: {m['global_step']} steps ({m['steps_per_s']:,.0f} steps/s), "
                   f"best validation mean reward {m['best_val_mean_reward']}")
    else:
        click.echo(f"{out_dir} is already complete at {m['global_step']} steps: nothing to train (resume with a "
                   f"larger --steps to extend it); best validation mean reward {m['best_val_mean_reward']}")
    if "validation" in m:
        click.echo(f"validation [{cfg.train_end}, {cfg.val_end}): mean reward/bar {m['validation']['mean_reward']:+.6f}, "
                   f"summed {m['validation']['mean_return']:+.4f} per env")
    if "synthetic_pretraining" in m:
        sp = m["synthetic_pretraining"]
        click.echo(f"synthetic pre-training: validation {sp['val_mean_reward_pretrained']} vs from scratch "
                   f"{sp['val_mean_reward_scratch']} -> kept {sp['chosen']}")
    click.echo(f"bundle: {result.bundle_dir}")


def register(cli: click.Group) -> None:
    cli.add_command(train_cmd)
