"""Each job's parameters are declared once (curate/params/): the CLI command and the recipe
stage are generated from the same model, so a field shows up in ``--help``, in
``curate stages`` and in recipes with the same name, default and help (issue 17)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import typer
from typer.main import get_command

from curate.commands._jobcli import Common, job_command, params_from_cli
from curate.params import Field, field_flags, is_argument
from curate.params.embedding_space import DBPParams, NearDedupParams
from curate.recipe.registry import get_kind, register
from curate.recipe.spec import load_recipe

# command path -> the recipe stage kind running the same job
JOBS = {
    ("cluster",): "cluster",
    ("dedup", "semantic"): "semdedup",
    ("dedup", "exact"): "exact_dedup",
    ("dedup", "near"): "near_dedup",
    ("dedup", "perceptual"): "perceptual_dedup",
    ("prune", "dbp"): "prune",
    ("prune", "ssp"): "prune",
    ("decontaminate",): "decontaminate",
    ("coverage",): "coverage",
    ("filter",): None,  # its filters are the recipe's filter stages (test_filter_specs_parse_through_...)
    ("metadata", "build"): None,
    ("metadata", "match"): "metaclip_balance",
    ("metadata", "balance"): "metaclip_balance",
    ("scorer", "train"): "scorer",
    ("scorer", "list"): None,
    ("sql",): None,  # a query's rows; the `sql` stage (a uid selection) is another job
    ("stats",): None,
    ("demo",): None,  # the demo runs a whole recipe itself
    # the pipeline's other commands (tests/recipe/test_command_params.py); `run` runs a recipe
    ("ingest",): None,
    ("download",): None,
    ("embed",): None,
    ("reshard",): None,
    ("select",): None,
    ("train",): None,
    ("eval",): None,
    ("run",): None,
    ("report",): None,
}

# every spelling the hand-written commands had (before issue 17): each still works
OLD_FLAGS = {
    ("filter",): "--filter -f --name --lid-model --recompute-stats --rows-per-shard --master --conf --engine "
                 "--storage-option",
    ("metadata", "build"): "--languages --lid-model --dataset -d --bigram-corpus --corpus-column --bigrams "
                           "--no-bigrams --bigram-min-count --bigram-min-pmi --wordnet --no-wordnet --wordnet-dir "
                           "--wordfreq-top --wordfreq-min-frequency --wordfreq-list --numbers --no-numbers --entries "
                           "--keep-unmatchable --max-entries --engine --master --conf",
    ("metadata", "match"): "--metadata -m --lid-model --nospace-match --batch-size --resume --engine --master --conf "
                           "--storage-option",
    ("metadata", "balance"): "--t --t-reference-pool --seed --tail-proportion --name --batch-size --engine --master "
                             "--conf --storage-option",
    ("scorer", "train"): "--seed-set -s --name -n --output -o --preset -p --seed --samples-seen --batch-size --lr "
                         "--warmup --arch --device --threads --nproc-per-node --overwrite --verbose -v "
                         "--progress-every --master --conf --engine",
    ("scorer", "list"): "",
    ("sql",): "--out --limit --memory-limit --max-spill --timeout --storage-option",
    ("stats",): "--storage-option",
    ("demo",): "--workdir -w --scale --seeds --samples-seen --pool-size --recipe --master --engine --open",
    ("ingest",): "--output -o --format --url-col --text-col --uid-col --width-col --height-col --image-col --captions "
                 "--header --rows-per-shard --max-text-chars --max-url-chars --faithful --no-faithful --master --conf "
                 "--engine --storage-option",
    ("download",): "--retry-failed --retry-class --image-size --resize-mode --resize-only-if-bigger --resize-always "
                   "--encode-format --encode-quality --skip-reencode --always-reencode --min-image-size "
                   "--max-image-area --max-aspect-ratio --samples-per-shard --shard-digits --threads --processes "
                   "--timeout --max-seconds --max-bytes --retries --allow-private-addresses --allow-network "
                   "--allow-file-urls --allow-store-prefix --user-agent-token --disallow-directive --master --conf --engine "
                   "--storage-option",
    ("embed",): "--model -m --pretrained -p --device --precision --batch-size --threads --seed --limit-shards "
                "--decode --fast-decode --master --conf --engine --storage-option",
    ("reshard",): "--subset -s --subset-file --output --out -o --shard-size --shuffle --no-shuffle --seed --overwrite "
                  "--engine --master --conf --storage-option",
    ("select",): "--sql --from-file --name -n --embedding-model --allow-unknown --storage-option",
    ("train",): "--output -o --preset -p --seed --samples-seen --batch-size --lr --warmup --checkpoints --model "
                "--pretrained --workers --device --precision --threads --overwrite --verbose -v --progress "
                "--no-progress --progress-every --nproc-per-node --nnodes --node-rank --master-addr --master-port "
                "--accum-freq --local-loss --global-loss --storage-option",
    ("eval",): "--model --zeroshot -z --retrieval -r --templates --max-per-class --images --output -o --device "
               "--batch-size --seed --storage-option",
    ("run",): "--dataset -d --output -o --embedding-model -m --no-cache --check --master --conf --engine "
              "--storage-option",
    ("report",): "--subset -s --out -o --eval --comparison --pool-subset --embeddings --embedding-model --title "
                 "--open --storage-option",
}


def _cli():
    from curate import cli

    cli._load_commands()
    return get_command(cli.app)


def _generated(group, path=()):
    """Every command generated from a job model: (path, click command, its model, the job's model)."""
    if hasattr(group, "commands"):
        for name, sub in group.commands.items():
            yield from _generated(sub, (*path, name))
    else:
        model = getattr(group.callback, "params_model", None)
        if model is not None:
            yield path, group, model, group.callback.job_model


def _cli_args(cmd, model) -> tuple[list[str], set[str]]:
    """Command-line words giving every required field a value (DATASET first where the command
    has it), and the fields they give."""
    params = {p.name: p for p in cmd.params}
    dataset = params.get("dataset")
    args = ["dataset"] if dataset is not None and dataset.param_type_name == "argument" else []
    options: list[str] = []
    given = set()
    for n, f in model.model_fields.items():
        if f.is_required():
            value = {int: "1", float: "0.5"}.get(f.annotation, "x")
            (args.append(value) if is_argument(f) else options.extend([field_flags(n, f)[0], value]))
            given.add(n)
    if "concepts" in model.model_fields:  # coverage: one concept source is needed
        options += ["--concepts", "c.txt"]
        given.add("concepts")
    if "from_file" in model.model_fields:  # select: a query or a subset file
        options += ["--sql", "SELECT uid FROM samples"]
        given.add("sql")
    return args + options, given


def _assert_same(cmd, model, stage_model, job_model=None) -> None:
    """Every field of ``model`` is an option of ``cmd`` (same help, required or not, and the
    command's default parses to the model's default); every field of the job's model (``model``
    less its command-line-only fields) is a key of the recipe stage's model (same default and
    help), where the job has a stage."""
    params = {p.name: p for p in cmd.params}
    argv, given = _cli_args(cmd, model)
    ctx = cmd.make_context(cmd.name, argv)  # what the command function gets
    parsed = params_from_cli(model, ctx.params)
    for name, f in model.model_fields.items():
        assert name in params, f"{cmd.name}: field {name} has no CLI option"
        opt = params[name]
        assert is_argument(f) or field_flags(name, f)[0] in opt.opts, (name, opt.opts)
        assert opt.help == f.description, name
        assert opt.required == f.is_required(), name
        if not f.is_required() and name not in given:
            assert getattr(parsed, name) == f.default, name
        if stage_model is None or name not in (job_model or model).model_fields:
            continue  # a command-line-only option (declared in a subclass in commands/)
        assert name in stage_model.model_fields, f"{cmd.name}: field {name} is not a recipe key"
        sf = stage_model.model_fields[name]
        assert (sf.is_required(), sf.default, sf.description) == (f.is_required(), f.default, f.description), name


def test_every_job_command_matches_its_recipe_stage():
    group = _cli()
    generated = {path: (cmd, model, job) for path, cmd, model, job in _generated(group)}
    assert set(JOBS) <= set(generated), sorted(set(JOBS) - set(generated))
    for path, (cmd, model, job) in generated.items():
        assert path in JOBS, f"{' '.join(path)} is generated from {model.__name__} but is not listed in JOBS"
        assert issubclass(model, job), path
        if JOBS[path] is None:  # no recipe stage runs this job
            _assert_same(cmd, model, None)
            continue
        stage = get_kind(JOBS[path])
        assert issubclass(stage.params, job), (path, stage.params)
        _assert_same(cmd, model, stage.params, job)


def test_old_flag_spellings_still_work():
    generated = {path: cmd for path, cmd, _, _ in _generated(_cli())}
    for path, flags in OLD_FLAGS.items():
        spelled = {o for p in generated[path].params for o in (*p.opts, *p.secondary_opts)}
        assert set(flags.split()) <= spelled, (path, set(flags.split()) - spelled)


def test_a_new_field_is_one_edit_seen_by_cli_stages_and_recipes(tmp_path):
    class NearPlus(NearDedupParams):
        max_group: int = Field(64, ge=1, description="Largest group kept whole (a throwaway test field).")

    app = typer.Typer()
    app.command("near")(job_command(NearPlus, lambda run, p: None, common=Common("near_dedup"), app_name="t",
                                    help="test"))
    app.command("other")(lambda: None)
    cmd = get_command(app).commands["near"]
    from curate.recipe import registry

    register("near_dedup_plus_test", NearPlus, family="test")(lambda ctx, uids, p: None)
    try:
        _one_edit(tmp_path, cmd, NearPlus)
    finally:
        del registry._REGISTRY["near_dedup_plus_test"]


def _one_edit(tmp_path, cmd, NearPlus) -> None:
    _assert_same(cmd, NearPlus, NearPlus)
    opt = {p.name: p for p in cmd.params}["max_group"]
    assert opt.opts == ["--max-group"] and opt.default == 64
    # a recipe takes it, checked by the same model
    r = load_recipe(tmp_path / "r.yaml", "name: r\ndataset: d\nstages:\n  - kind: near_dedup_plus_test\n"
                    "    max_group: 3\n")
    assert r.stages[0].params["max_group"] == 3
    from curate.errors import RecipeError

    with pytest.raises(RecipeError, match=r"r.yaml:5: stages.0.max_group"):
        load_recipe(tmp_path / "r.yaml", "name: r\ndataset: d\nstages:\n  - kind: near_dedup_plus_test\n"
                    "    max_group: 0\n")
    # and `curate stages` lists it with its help
    from curate.recipe.registry import describe_params

    assert ("max_group=64", "Largest group kept whole (a throwaway test field).") in \
        describe_params(get_kind("near_dedup_plus_test"))


def _curate(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "curate.cli", *argv], capture_output=True, text=True, timeout=300)


def test_a_bad_value_is_one_line_naming_the_option(tmp_path):
    r = _curate("dedup", "semantic", str(tmp_path), "--eps", "2")
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == ["curate: error: --eps must be in (0, 1], got '2'"]
    r = _curate("prune", "dbp", str(tmp_path), "--keep-fraction", "0.5", "--neighbors", "zero")
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == ["curate: error: --neighbors must be an integer, got 'zero'"]
    r = _curate("dedup", "near", str(tmp_path), "--embedding", "audio")
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        "curate: error: --embedding must be one of image, text, concat, got 'audio'"]


def test_model_is_a_deprecated_spelling_of_embeddings(tmp_path):
    r = _curate("cluster", str(tmp_path / "missing"), "-k", "2", "--model", "nope")
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 2, r.stderr
    assert lines[0] == "curate: warning: --model is deprecated here, use --embeddings (docs/embedding_space.md)"
    assert lines[1].startswith("curate: error: ") and "does not exist" in lines[1]
    r = _curate("cluster", str(tmp_path / "missing"), "-k", "2", "--embeddings", "nope")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "warning" not in r.stderr


def test_old_recipe_keys_still_load(tmp_path):
    r = load_recipe(tmp_path / "r.yaml", "name: r\ndataset: d\nstages:\n"
                    "  - kind: near_dedup\n    threshold: 0.9\n    model: toy\n"
                    "  - kind: decontaminate\n    eval: e\n    threshold: 0.9\n    model: toy\n"
                    "    model_name: curate-tiny\n    pretrained: w.pt\n"
                    "  - kind: cluster\n    k: 2\n    model: toy\n"
                    "  - kind: perceptual_dedup\n    model: toy\n")
    near, decon, clus, perc = (s.params for s in r.stages)
    assert near["embeddings"] == decon["embeddings"] == clus["embeddings"] == perc["embeddings"] == "toy"
    assert (decon["eval_model"], decon["eval_pretrained"]) == ("curate-tiny", "w.pt")
    assert near["nprobe"] == 8 and near["clusters"] is None


def test_prune_stage_takes_neighbors(tmp_path):
    r = load_recipe(tmp_path / "r.yaml", "name: r\ndataset: d\nstages:\n  - kind: prune\n    keep_fraction: 0.5\n"
                    "    neighbors: 5\n")
    assert r.stages[0].params["neighbors"] == 5
    assert set(DBPParams.model_fields) < set(get_kind("prune").params.model_fields)


def test_filter_specs_parse_through_the_recipe_stage_models():
    from curate.filters.stages import describe_filters, parse_filter
    from curate.params.filters import FILTERS

    needs = {"clip_score": "threshold=0.3", "image_based": "target=t.npy", "text_based": "synsets=s.txt"}
    help_text = describe_filters()
    for name, model in FILTERS.items():
        assert get_kind(name).params is model  # the recipe stage takes the filter's model as is
        given = dict(kv.split("=") for kv in filter(None, [needs.get(name)]))
        spec = parse_filter(name + (f":{needs[name]}" if name in needs else ""))
        assert spec.params == model.model_validate(given).model_dump()
        for key, f in model.model_fields.items():
            assert f"{key}={f.default} ({f.description})" in help_text  # `curate filter --help`
            if key not in given:
                assert spec.params[key] == f.default


@pytest.mark.parametrize("model,function", [
    ("embedding_space.ClusterParams", "curate.embedding_space.clusters.run_cluster"),
    ("embedding_space.SemDeDupParams", "curate.embedding_space.jobs.semdedup.run_semdedup"),
    ("embedding_space.ExactDedupParams", "curate.embedding_space.jobs.exact_dedup.run_exact_dedup"),
    ("embedding_space.NearDedupParams", "curate.embedding_space.jobs.near_dedup.run_near_dedup"),
    ("embedding_space.DBPParams", "curate.embedding_space.jobs.prune.run_prune"),
    ("embedding_space.PruneParams", "curate.embedding_space.jobs.prune.run_prune"),
    ("embedding_space.DecontaminateParams", "curate.embedding_space.jobs.decontaminate.run_decontaminate"),
    ("perceptual.PerceptualDedupParams", "curate.perceptual.job.run_perceptual_dedup"),
    ("coverage.CoverageParams", "curate.coverage.job.run_coverage"),
])
def test_every_field_reaches_the_job_function(model, function):
    """``job_kwargs()`` (what the command and the stage pass) names only arguments the job
    function has, and every field not resolved by the caller is among them."""
    import importlib
    import inspect

    module, name = model.rsplit(".", 1)
    cls = getattr(importlib.import_module(f"curate.params.{module}"), name)
    fmod, fname = function.rsplit(".", 1)
    signature = inspect.signature(getattr(importlib.import_module(fmod), fname))
    values = {**_required_values(cls), **({"concepts": "c.txt"} if "concepts" in cls.model_fields else {})}
    kwargs = cls.model_validate(values).job_kwargs()
    assert set(kwargs) <= set(signature.parameters), set(kwargs) - set(signature.parameters)
    passed = {n for n in cls.model_fields if n not in cls.job_arg_exclude}
    assert {cls.job_arg_names.get(n, n) for n in passed} - {"max_sample_gb"} <= set(kwargs)


def _required_values(cls) -> dict:
    return {n: {int: 1, float: 0.5}.get(f.annotation, "x") for n, f in cls.model_fields.items() if f.is_required()}


# recipe stage kind -> (its parameters model, values for its required keys)
STAGE_MODELS = {
    "metaclip_balance": ("curate.params.metaclip.MetaclipStageParams", {"metadata": "m.json"}),
    "scorer": ("curate.params.scorer.ScorerTrainParams", {"seed_set": "seed/"}),
    "sql": ("curate.params.sql.SQLParams", {"query": "SELECT uid FROM samples"}),
}


@pytest.mark.parametrize("kind", sorted(STAGE_MODELS))
def test_every_field_is_a_recipe_key_and_listed_by_curate_stages(kind, tmp_path, capsys):
    """The stage's model is the job's, declared in curate/params/: every field is listed by
    ``curate stages`` (default and help) and is a key a recipe takes."""
    import importlib

    import yaml

    from curate.recipe.registry import describe_params

    path, required = STAGE_MODELS[kind]
    module, name = path.rsplit(".", 1)
    model = getattr(importlib.import_module(module), name)
    stage = get_kind(kind)
    assert stage.params is model
    listed = dict(describe_params(stage))
    for key, f in model.model_fields.items():
        default = "required" if f.is_required() else repr(f.default)
        assert listed[f"{key}={default}"] == f.description and f.description, key
    keys = {k: required.get(k, f.default) for k, f in model.model_fields.items() if k != "name"}
    text = yaml.safe_dump({"name": "r", "dataset": "d", "stages": [{"kind": kind, **keys}]})
    loaded = load_recipe(tmp_path / "r.yaml", text).stages[0].params
    assert {k: loaded[k] for k in keys} == keys
    listed_keys = _curate_stages_keys(kind, capsys)
    assert listed_keys == list(model.model_fields)


def _curate_stages_keys(kind: str, capsys) -> list[str]:
    """The keys `curate stages` prints under ``kind``."""
    from curate.cli import main

    with pytest.raises(SystemExit) as e:
        main(["stages"])
    assert not e.value.code
    lines = capsys.readouterr().out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"{kind} "))
    keys = []
    for line in lines[start + 1:]:
        if not line.startswith("    "):
            break
        keys.append(line.split("=", 1)[0].strip())
    return keys


def test_an_old_recipe_key_warns_naming_stage_old_and_new_key(tmp_path, capsys):
    load_recipe(tmp_path / "r.yaml", "name: r\ndataset: d\nstages:\n"
                "  - kind: near_dedup\n    name: near\n    threshold: 0.9\n    model: toy\n"
                "  - kind: decontaminate\n    eval: e\n    pretrained: w.pt\n"
                "  - kind: cluster\n    k: 2\n    embeddings: toy\n")
    assert capsys.readouterr().err.splitlines() == [
        f"curate: warning: {tmp_path / 'r.yaml'}:7: stage 'near': key 'model' is deprecated, use 'embeddings'",
        f"curate: warning: {tmp_path / 'r.yaml'}:10: stage 'decontaminate': key 'pretrained' is deprecated, "
        "use 'eval_pretrained'"]
    # a filter whose parameter is called model is not an old key
    load_recipe(tmp_path / "r.yaml", "name: r\ndataset: d\nstages:\n  - kind: clip_score\n    threshold: 0.3\n"
                "    model: toy\n")
    assert capsys.readouterr().err == ""


def test_sql_defaults_are_curate_sql_s():
    import curate.params.sql as params
    import curate.sql as sql

    for name in ("DEFAULT_MEMORY_LIMIT", "DEFAULT_TIMEOUT_S", "DEFAULT_MAX_SPILL", "MAX_SPILL_ENV"):
        assert getattr(params, name) == getattr(sql, name), name


def test_demo_scales_are_the_demo_s():
    from typing import get_args

    from curate.demo.run import SCALES
    from curate.params.demo import DemoParams

    assert set(get_args(DemoParams.model_fields["scale"].annotation)) == set(SCALES)


def test_generated_commands_check_values_as_one_line(tmp_path):
    r = _curate("metadata", "balance", str(tmp_path), "--t", "0")
    assert r.returncode == 2 and r.stderr.strip().splitlines() == ["curate: error: --t must be > 0, got '0'"]
    r = _curate("metadata", "match", str(tmp_path), "-m", "m.json", "--nospace-match", "words")
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        "curate: error: --nospace-match must be one of substring, tokens, got 'words'"]
    r = _curate("sql", str(tmp_path), "SELECT 1", "--limit", "many")
    assert r.returncode == 2 and r.stderr.strip().splitlines() == ["curate: error: --limit must be an integer, "
                                                                   "got 'many'"]
    r = _curate("scorer", "train", str(tmp_path), "-s", "seed", "--samples-seen", "0")
    assert r.returncode == 2 and r.stderr.strip().splitlines() == ["curate: error: --samples-seen must be > 0, "
                                                                   "got '0'"]


@pytest.mark.parametrize("path", sorted(OLD_FLAGS))
def test_help_shows_every_field_with_its_help(path, capsys, monkeypatch):
    """What `--help` prints: each field's option (or argument) with its description."""
    from curate.cli import main

    cmd = dict(((p, c) for p, c, _, _ in _generated(_cli())))[path]
    model = cmd.callback.params_model
    monkeypatch.setenv("COLUMNS", "600")  # one line per option: the help text is not wrapped
    with pytest.raises(SystemExit) as e:
        main([*path, "--help"])
    assert not e.value.code
    out = " ".join(capsys.readouterr().out.split())
    for n, f in model.model_fields.items():
        assert (n.upper() if is_argument(f) else field_flags(n, f)[0]) in out, n
        assert " ".join(f.description.split()) in out, n
