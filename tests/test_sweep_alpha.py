"""eval_loogle.sweep_alpha on the transformers backend: each λ's answers equal those of the model
inherit_weight.py writes for it (seeded sampling, same settings), judged by the judge server and
filed per λ; a rerun skips what is done; show_results.py prints the sweep; bad input is refused
before anything is written. (The vLLM backend: tests/test_inplace_transfer.py.)"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import inherit_weight
from eval_loogle import generate_answers, sweep_alpha
from helpers import free_port
from prepare_data import loogle_to_parquet

REPO_ROOT = Path(__file__).resolve().parent.parent
ALPHAS = ("1", "-0.5", "0")
SETTINGS = ["--passage_idx", "4", "--n_runs", "2", "--max_new_tokens", "6", "--backend", "hf"]


@pytest.fixture(scope="module")
def data_dir(loogle_corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("data")
    loogle_to_parquet.main(["--input", str(loogle_corpus), "--output_dir", str(out), "--passages", "4"])
    return out


def sweep(*args):
    sweep_alpha.main([*map(str, args)])


def responses(path):
    return [a["response"] for a in json.loads(Path(path).read_text())["answers"]]


def driver(env, *args):
    env = {**os.environ, "PYTHON": sys.executable, "START_JUDGE": "0", **{k: str(v) for k, v in env.items()}}
    return subprocess.run(["bash", str(REPO_ROOT / "scripts" / "eval" / "sweep_alpha.sh"), *args], capture_output=True, text=True,
                          env=env, timeout=600, cwd="/")


@pytest.fixture(scope="module")
def swept(tiny_model, tiny_skill_vector, data_dir, lexical_judge_url, tmp_path_factory):
    """The sweep run by its driver, scripts/eval/sweep_alpha.sh, with SETTINGS."""
    results = tmp_path_factory.mktemp("eval_results")
    done = driver({"passage_id": 4, "TARGET_MODEL": tiny_model, "SKILL_VECTOR": tiny_skill_vector, "ALPHAS": " ".join(ALPHAS),
                   "N_RUNS": 2, "EVAL_MAX_NEW_TOKENS": 6, "EVAL_BACKEND": "hf", "DATA_ROOT": data_dir, "RESULTS_DIR": results,
                   "JUDGE_URL": lexical_judge_url})
    assert done.returncode == 0, done.stderr[-3000:]
    return results


def test_driver_dry_run_prints_the_command_with_passthrough_args():
    done = driver({"DRY_RUN": 1, "passage_id": 3, "SKILL_VECTOR": "v1.safetensors v2.safetensors"}, "--temperature", "0")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "-m eval_loogle.sweep_alpha --target_model " in out and "checkpoints/passage3/stage2/final" in out
    assert "--skill_vector v1.safetensors v2.safetensors --alphas -0.5 0 0.5 1 1.5 --sweep_name inherited --passage_idx 3" in out
    assert out.rstrip().endswith("--temperature 0")
    done = driver({"passage_id": 3})
    assert done.returncode == 2 and "set SKILL_VECTOR" in done.stderr


@pytest.mark.slow
def test_each_point_answers_as_the_written_model_does(swept, tiny_model, tiny_skill_vector, data_dir, lexical_judge_url, tmp_path):
    answers = {}
    for alpha in ALPHAS:
        point = swept / f"inherited_a{float(alpha):g}" / "passage4"
        doc = json.loads((point / "test_results.json").read_text())
        assert doc["sweep"] == {"name": "inherited", "alpha": float(alpha), "alphas": [float(alpha)], "target_model": str(tiny_model),
                                "skill_vectors": [str(tiny_skill_vector)]}
        assert doc["judge"]["where"] == lexical_judge_url and len(doc["results"]) == 2 * 4
        assert doc["accuracy"]["n_runs"] == 2 and "rougel" in doc["automatic_metrics"]["mean"]
        assert set(doc["seconds"]) == {"weights", "generate", "judge"}
        written = inherit_weight.main(["--skill_vector", str(tiny_skill_vector), "--alpha", alpha, "--target_models", str(tiny_model),
                                       "--output_dirs", str(tmp_path / f"model{alpha}")])
        assert written in (0, None)
        generate_answers.main(["--model_path", str(tmp_path / f"model{alpha}"), *SETTINGS, "--data_dir", str(data_dir),
                               "--output_file", str(tmp_path / f"answers{alpha}.json")])
        answers[alpha] = responses(point / "answers.json")
        assert answers[alpha] == responses(tmp_path / f"answers{alpha}.json"), f"λ = {alpha}"
    assert answers["1"] != answers["0"] and answers["-0.5"] != answers["0"]
    # λ = 0 is the target itself
    generate_answers.main(["--model_path", str(tiny_model), *SETTINGS, "--data_dir", str(data_dir), "--output_file", str(tmp_path / "target.json")])
    assert answers["0"] == responses(tmp_path / "target.json")


@pytest.mark.slow
def test_rerun_skips_judged_points_and_other_weights_are_refused(swept, tiny_model, tiny_skill_vector, data_dir, lexical_judge_url, tmp_path,
                                                                 caplog, capsys):
    files = {p: p.read_bytes() for p in swept.glob("*/passage4/*.json")}
    caplog.set_level("INFO")
    sweep("--target_model", tiny_model, "--skill_vector", tiny_skill_vector, "--alphas", *ALPHAS, *SETTINGS,
          "--data_dir", data_dir, "--results_dir", swept, "--judge_url", lexical_judge_url)
    assert caplog.text.count("already judged") == len(ALPHAS) and "engine" not in caplog.text
    assert {p: p.read_bytes() for p in swept.glob("*/passage4/*.json")} == files
    # the same sweep name with another vector would mix two sweeps: refused, nothing changed
    other = tmp_path / "other.safetensors"
    other.write_bytes(tiny_skill_vector.read_bytes())
    with pytest.raises(SystemExit) as e:
        sweep("--target_model", tiny_model, "--skill_vector", other, "--alphas", "1", *SETTINGS,
              "--data_dir", data_dir, "--results_dir", swept, "--judge_url", lexical_judge_url)
    assert e.value.code == 2 and "holds results of other weights" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in swept.glob("*/passage4/*.json")} == files


@pytest.mark.slow
def test_show_results_prints_the_sweep(swept):
    done = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "show_results.py"), "--results_dir", str(swept), "--no_plots"],
                          capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("### λ sweep inherited: target + λ·(") and "Judge: lexical." in done.stdout
    assert [line.split("|")[1].strip() for line in lines if line.startswith("| ")][1:] == ["-0.5", "0", "1"]


@pytest.mark.parametrize("case", ["repeated λ", "tied target", "judge down"])
def test_bad_input_is_refused_before_anything_is_written(case, tiny_model, tiny_model_tied, tiny_skill_vector, data_dir, tmp_path, capsys):
    target, alphas, message = tiny_model, ["0", "1"], "judge server not reachable"
    if case == "repeated λ":
        alphas, message = ["0.5", "1", "0.50"], "--alphas 0.5 1 0.5 repeats a value"
    if case == "tied target":  # the vector has its own lm_head delta: a loaded tied model cannot take it
        target, message = tiny_model_tied, "ties lm_head to its embeddings"
    with pytest.raises(SystemExit) as e:
        sweep("--target_model", target, "--skill_vector", tiny_skill_vector, "--alphas", *alphas, *SETTINGS, "--data_dir", data_dir,
              "--results_dir", tmp_path / "r", "--judge_url", f"http://127.0.0.1:{free_port()}")
    assert e.value.code == (1 if case == "judge down" else 2) and message in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_the_openai_backend_is_not_offered(capsys):
    with pytest.raises(SystemExit):
        sweep("--target_model", "m", "--skill_vector", "v", "--alphas", "1", "--passage_idx", "0", "--backend", "openai")
    assert "invalid choice: 'openai'" in capsys.readouterr().err
