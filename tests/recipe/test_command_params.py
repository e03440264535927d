"""The commands that are not selection jobs (ingest, download, embed, reshard, select, train,
eval, run) are generated from one parameters model each (curate/params/, _jobcli.py): every
field is an argument or option with its help text in ``--help``, a bad value is one line naming
the option (exit 2), and the model's defaults are the library's (issue 17)."""

from __future__ import annotations

import inspect
import re

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from curate.cli import main
from curate.errors import CurateError
from curate.params import field_flags, is_argument

# command -> its model, by name (so a command that stops being generated fails here)
COMMANDS = {"ingest": "IngestParams", "download": "DownloadParams", "embed": "EmbedParams",
            "reshard": "ReshardParams", "select": "SelectParams", "train": "TrainParams", "eval": "EvalParams",
            "run": "RunParams", "report": "ReportParams"}


def _app():
    from curate import cli

    cli._load_commands()
    return cli.app


def _leaf_commands():
    """(words, command) of every command that runs, subcommands included. A group is anything
    with ``commands``: typer 0.27 on builds on its own copy of click, not ``click.Group``."""
    def walk(cmd, path):
        subs = getattr(cmd, "commands", None)
        if subs:
            for name, sub in subs.items():
                yield from walk(sub, [*path, name])
        else:
            yield path, cmd

    found = list(walk(get_command(_app()), []))
    assert len(found) > 20, found  # every command, not the group alone
    return found


def _help(name: str) -> str:
    """``curate NAME --help`` as one line of words (wide enough that nothing is cut)."""
    r = CliRunner().invoke(_app(), [name, "--help"], env={"COLUMNS": "3000", "TERMINAL_WIDTH": "3000"})
    assert r.exit_code == 0, r.output
    return re.sub(r"[\s│]+", " ", r.output)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_field_shows_in_help_with_its_help_text(name):
    cmd = get_command(_app()).commands[name]
    model = cmd.callback.params_model
    assert model.__name__ == COMMANDS[name]
    params = {p.name: p for p in cmd.params}
    text = _help(name)
    for field_name, f in model.model_fields.items():
        assert field_name in params, f"{name}: field {field_name} is not an argument or option"
        p = params[field_name]
        assert f.description and " ".join(f.description.split()) in text, (name, field_name)
        assert p.required == f.is_required(), (name, field_name)
        if is_argument(f):
            assert p.param_type_name == "argument", (name, field_name)
            continue
        for flag in field_flags(field_name, f):
            assert flag in p.opts + p.secondary_opts and flag in text, (name, flag)
        assert p.help == f.description and not p.hidden


# (argv, the one error line): a bad value of each command, refused before any work
BAD = [
    (["ingest", "in.csv", "-o", "{tmp}/ds", "--header", "maybe"],
     "--header must be one of auto, yes, no, got 'maybe'"),
    (["ingest", "in.csv", "-o", "{tmp}/ds", "--max-text-chars", "0"], "--max-text-chars must be >= 1, got '0'"),
    (["download", "{tmp}/ds", "--threads", "many"], "--threads must be an integer, got 'many'"),
    (["download", "{tmp}/ds", "--resize-mode", "stretch"],
     "--resize-mode must be one of no, keep_ratio, keep_ratio_largest, center_crop, border, got 'stretch'"),
    (["embed", "{tmp}/ds", "--batch-size", "1.5"], "--batch-size must be an integer, got '1.5'"),
    (["reshard", "{tmp}/ds", "--shard-size", "big"], "--shard-size must be an integer, got 'big'"),
    (["reshard", "{tmp}/ds", "--subset", "../samples"],
     "--subset '../samples' contains a path separator; use a plain name such as 'my_subset'"),
    (["select", "{tmp}/ds", "--name", "s"], "curate select needs exactly one of --sql QUERY or --from-file PATH"),
    (["select", "{tmp}/ds", "--name", "s", "--sql", "SELECT uid FROM samples", "--embedding-model", "a/b"],
     "--embedding-model 'a/b' contains a path separator; use a plain name such as 'my_subset'"),
    (["train", "{tmp}/shards", "-o", "{tmp}/run", "--lr", "fast"], "--lr must be a number, got 'fast'"),
    (["eval", "--max-per-class", "all"], "--max-per-class must be an integer, got 'all'"),
    (["report", "{tmp}/ds", "--eval", "results.json"], "--eval: expects LABEL=PATH, got 'results.json'"),
    (["run", "recipes/demo.yaml", "--output", "a/b"],
     "--output 'a/b' contains a path separator; use a plain name such as 'my_subset'"),
]


@pytest.mark.parametrize("argv,line", BAD, ids=[f"{a[0]}-{i}" for i, (a, _) in enumerate(BAD)])
def test_a_bad_value_is_one_line_naming_the_option(tmp_path, capsys, argv, line):
    with pytest.raises(SystemExit) as info:
        main([a.format(tmp=tmp_path) for a in argv])
    assert info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"curate: error: {line}"]
    assert not (tmp_path / "ds").exists() and not (tmp_path / "run").exists()  # nothing written


def test_every_command_is_tested_here():
    generated = {n for n, c in get_command(_app()).commands.items() if hasattr(c.callback, "params_model")}
    assert set(COMMANDS) <= generated
    assert {a[0] for a, _ in BAD} == set(COMMANDS)


def _defaults(function) -> dict:
    return {n: p.default for n, p in inspect.signature(function).parameters.items()
            if p.default is not inspect.Parameter.empty}


def test_defaults_are_the_librarys():
    """The models make the library's config objects; with no option given they are the
    library's defaults (a default changed on one side only fails here)."""
    from curate.download import DownloadOptions
    from curate.embed.job import EmbedOptions
    from curate.evaluate import evaluate
    from curate.ingest.job import IngestConfig
    from curate.params.download import DownloadParams
    from curate.params.embed import EmbedParams
    from curate.params.evaluate import EvalParams
    from curate.params.ingest import IngestParams
    from curate.params.reshard import ReshardParams
    from curate.params.train import TrainParams
    from curate.reshard import reshard
    from curate.train import Launch
    from curate.train.runner import train  # (curate.train.train: this, with an output URI uploaded)

    assert IngestParams(inputs=["a.csv"], output="ds").config() == IngestConfig(inputs=["a.csv"], output="ds")
    assert DownloadParams().options() == DownloadOptions()
    p = EmbedParams()
    assert p.options(p.model, p.pretrained, p.seed) == EmbedOptions()
    kw = TrainParams(data="shards", output="run").job_kwargs()
    assert kw.pop("launch") == Launch()
    assert set(kw) - {"data", "output"} <= set(_defaults(train))
    assert kw == {**{k: v for k, v in _defaults(train).items() if k in kw}, "data": "shards", "output": "run"}
    kw = ReshardParams().job_kwargs()
    assert kw == {k: v for k, v in _defaults(reshard).items() if k in kw} and set(kw) <= set(_defaults(reshard))
    ev = EvalParams().model_dump()
    assert {k: ev[k] for k in ("max_per_class", "device", "batch_size", "seed", "templates", "output")} == \
        {k: _defaults(evaluate)[k] for k in ("max_per_class", "device", "batch_size", "seed", "templates", "output")}


def _parsed(name: str, argv: list[str]):
    """The validated model ``curate NAME ARGV`` would run with (parsed, nothing run)."""
    from curate.commands._jobcli import params_from_cli

    cmd = get_command(_app()).commands[name]
    ctx = cmd.make_context(name, list(argv))
    return params_from_cli(cmd.callback.params_model, ctx.params), ctx.args


def test_switches_and_spellings_reach_the_config():
    """Off switches, a bool whose default depends on another option, extra spellings and the
    arguments after ``--`` reach the library's config as before the change."""
    from curate.train import Launch

    assert _parsed("ingest", ["a.csv", "-o", "ds"])[0].config().rules.faithful is False
    assert _parsed("ingest", ["a.npy", "-o", "ds", "--format", "datacomp"])[0].config().rules.faithful is True
    cfg = _parsed("ingest", ["a.npy", "-o", "ds", "--format", "datacomp", "--no-faithful"])[0].config()
    assert cfg.rules.faithful is False
    cfg = _parsed("ingest", ["a.csv", "b/", "--output", "ds", "--faithful", "--url-col", "0",
                             "--header", "no"])[0].config()
    assert (cfg.inputs, cfg.rules.faithful, cfg.options.columns.url, cfg.options.header) == (["a.csv", "b/"], True,
                                                                                             "0", "no")
    opts = _parsed("download", ["ds", "--resize-always", "--always-reencode", "--allow-private-addresses",
                                "--allow-network", "127.0.0.1/32", "--disallow-directive", "noai",
                                "--allow-store-prefix", "s3://b/imgs", "--allow-store-prefix", "gs://c",
                                "--threads", "3", "--processes", "2"])[0].options()
    assert (opts.resize_only_if_bigger, opts.skip_reencode, opts.thread_count, opts.processes_count) == (False, False,
                                                                                                          3, 2)
    assert (opts.policy.allow_private, opts.policy.allow_networks, opts.policy.disallowed_directives) == (
        True, ["127.0.0.1/32"], ["noai"])
    assert opts.policy.allow_store_prefixes == ["s3://b/imgs", "gs://c"]
    with pytest.raises(CurateError, match="--allow-store-prefix 'imgs/': not an object-store folder"):
        _parsed("download", ["ds", "--allow-store-prefix", "imgs/"])[0].options()
    assert _parsed("reshard", ["ds", "--out", "o", "--no-shuffle"])[0].output == "o"
    assert _parsed("reshard", ["ds", "-o", "o", "--shuffle"])[0].job_kwargs()["shuffle"] is True
    p, extra = _parsed("train", ["shards", "-o", "run", "--global-loss", "-v", "--nproc-per-node", "2", "--",
                                 "--grad-clip-norm", "1"])
    kw = p.job_kwargs()
    assert (kw["local_loss"], kw["verbose"], kw["launch"], extra) == (False, True, Launch(nproc_per_node=2),
                                                                      ["--grad-clip-norm", "1"])
    p = _parsed("train", ["shards", "-o", "run", "--progress-every", "2.5"])[0]
    assert p.job_kwargs()["progress_every_s"] == 2.5
    p = _parsed("eval", ["-z", "a", "--zeroshot", "b", "-r", "c"])[0]
    assert (p.zeroshot, p.retrieval) == (["a", "b"], ["c"])
    assert _parsed("select", ["ds", "-n", "s", "--from-file", "x.npy"])[0].name == "s"
    assert _parsed("run", ["r.yaml", "-d", "ds", "-m", "m1", "--no-cache"])[0].model_dump() == {
        "recipe": "r.yaml", "dataset": "ds", "output": None, "embedding_model": "m1", "no_cache": True, "check": False}


def test_no_command_lists_an_option_spelling_twice():
    """``report --help`` showed ``--subset,--subset -s``: a field's own flag repeated in its extra
    spellings is listed once, in every command."""
    for path, cmd in _leaf_commands():
        for p in cmd.params:
            spellings = [*p.opts, *p.secondary_opts]
            assert len(spellings) == len(set(spellings)), (path, spellings)


def test_every_help_labels_types_in_one_style():
    """Values reach the models as text, and the labels the generated options gave (``TEXT``,
    ``INTEGER``) were older typer's while the shared options took typer 0.27's ``<str>``: one help
    table mixed both, and DATASET was ``{dataset}`` beside ``{INPUTS}``. Every command's help now
    uses the installed typer's style, and every argument is named in capitals."""
    from curate.commands._jobcli import _ANGLE_LABELS

    old, new = re.compile(r"(?<![\w-])(TEXT|INTEGER|FLOAT)(?![\w-])"), re.compile(r"<(str|int|float)>")
    for path, _ in _leaf_commands():
        r = CliRunner().invoke(_app(), [*path, "--help"], env={"COLUMNS": "3000", "TERMINAL_WIDTH": "3000"})
        assert r.exit_code == 0, (path, r.output)
        labels = " ".join(line.split("│")[1] if "│" in line else "" for line in r.output.splitlines())
        assert not (old if _ANGLE_LABELS else new).search(labels), (path, r.output)
        usage = next(line for line in r.output.splitlines() if "Usage:" in line)
        assert not re.search(r"[{\[]?\b[a-z_]+\b[}\]]?\.{0,3}$", usage.split("[OPTIONS]")[-1].strip() or "X"), usage


# (argv, the one error line): a count or size a command would crash on, divide by or loop on
# (eval's batch 0 and ingest's shard size 0 were tracebacks; demo --seeds 0 ran the whole demo;
# embed's and train's came after the dataset's checks)
BOUNDS = [
    (["download", "DS", "--samples-per-shard", "0"], "--samples-per-shard must be >= 1, got '0'"),
    (["download", "DS", "--max-bytes", "0"], "--max-bytes must be >= 1, got '0'"),
    (["download", "DS", "--processes", "-1"], "--processes must be >= 0, got '-1'"),
    (["download", "DS", "--timeout", "0"], "--timeout must be > 0, got '0'"),
    (["embed", "DS", "--batch-size", "-1"], "--batch-size must be >= 0, got '-1'"),
    (["embed", "DS", "--limit-shards", "-2"], "--limit-shards must be >= 0, got '-2'"),
    (["eval", "--model", "curate-tiny", "-z", "Z", "--batch-size", "0"], "--batch-size must be >= 1, got '0'"),
    (["ingest", "IN", "-o", "DS", "--rows-per-shard", "0"], "--rows-per-shard must be >= 1, got '0'"),
    (["reshard", "DS", "-s", "x", "--shard-size", "0"], "--shard-size must be >= 1, got '0'"),
    (["sql", "DS", "select 1", "--timeout", "-1"], "--timeout must be >= 0, got '-1'"),
    (["train", "T", "-o", "R", "--threads", "-2"], "--threads must be > 0, got '-2'"),
    (["train", "T", "-o", "R", "--progress-every", "-1"], "--progress-every must be >= 0, got '-1'"),
    (["train", "T", "-o", "R", "--master-port", "70000"], "--master-port must be in [1, 65535], got '70000'"),
    (["demo", "--seeds", "0"], "--seeds must be >= 1, got '0'"),
    (["demo", "--samples-seen", "0"], "--samples-seen must be >= 1, got '0'"),
    (["demo", "--pool-size", "0"], "--pool-size must be >= 1, got '0'"),
]


@pytest.mark.parametrize("argv, line", BOUNDS, ids=[" ".join(a[:1] + a[-2:]) for a, _ in BOUNDS])
def test_counts_and_sizes_out_of_range_are_one_line_before_any_work(argv, line, tmp_path, capsys):
    """Refused by the parameters model, before any file is looked at (the paths here do not exist)."""
    with pytest.raises(SystemExit) as e:
        main([str(tmp_path / w) if w in ("DS", "IN", "Z", "T", "R") else w for w in argv])
    err = capsys.readouterr().err
    assert e.value.code == 2 and line in err and err.count("\n") == 1, err


# (argv with FILE or FOLDER, the one error line): an output of the wrong kind, said before any work
# (train and reshard into a file were tracebacks; eval and report into a folder failed after the work)
WRONG_KIND = [
    (["train", "T", "-o", "FILE"], "--output {FILE} is a file; give a folder to write into"),
    (["reshard", "DS", "-s", "x", "-o", "FILE"], "--output {FILE} is a file; give a folder to write into"),
    (["scorer", "train", "DS", "--seed-set", "T", "-o", "FILE"], "--output {FILE} is a file; give a folder"),
    (["eval", "--model", "curate-tiny", "-z", "T", "-o", "FOLDER"], "--output {FOLDER} is a folder; give the file's"),
    (["report", "DS", "-o", "FOLDER"], "--out {FOLDER} is a folder; give the file's path"),
    (["metadata", "build", "FOLDER", "--no-bigrams"], "OUTPUT {FOLDER} is a folder; give the file's path"),
    (["demo", "--workdir", "FILE"], "--workdir {FILE} is a file; give a folder to write into"),
]


@pytest.mark.parametrize("argv, line", WRONG_KIND, ids=[" ".join(a[:2]) for a, _ in WRONG_KIND])
def test_an_output_of_the_wrong_kind_is_one_line_before_any_work(argv, line, tmp_path, capsys):
    paths = {"FILE": tmp_path / "a-file", "FOLDER": tmp_path / "a-folder", "DS": tmp_path / "ds", "T": tmp_path / "t"}
    paths["FILE"].write_text("x")
    paths["FOLDER"].mkdir()
    (tmp_path / "t").mkdir()
    with pytest.raises(SystemExit) as e:
        main([str(paths[w]) if w in paths else w for w in argv])
    err = capsys.readouterr().err
    want = line.format(**{k: str(v) for k, v in paths.items()})
    assert e.value.code == 2 and want in err and err.count("\n") == 1, err
    assert not (tmp_path / "ds").exists() and not any(paths["FOLDER"].iterdir())
