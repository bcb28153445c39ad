"""ServeGen's per-client arrival statistics drive a request trace: rates follow the windows, lengths the mix."""

import gzip

import pytest

from fleetserve.autoscaler.sim_servegen import generate, main
from fleetserve.autoscaler.sim_traces import InputError, load_requests

HEADER = "client_id,window_start_s,rate_rps,cv,arrival_pattern,pattern_param1,pattern_param2\n"


@pytest.fixture
def inputs(tmp_path):
    # Client 0 sends 1 req/s in the first window and 3 req/s in the second; client 1 only in the second, bursty.
    rows = ["0,0,1.0,1.0,Gamma,1.0,1.0", "0,600,3.0,1.0,Gamma,1.0,1.0", "1,0,0.0,0,,0,0",
            "1,600,1.0,4.0,Weibull,0.4,0.5", "0,1200,5.0,1.0,Gamma,1.0,1.0"]
    clients = tmp_path / "clients.csv.gz"
    with gzip.open(clients, "wt") as handle:
        handle.write(HEADER + "\n".join(rows) + "\n")
    short, long = tmp_path / "short.csv", tmp_path / "long.csv"
    short.write_text("arrival_s,prompt_tokens,output_tokens\n0,100,10\n1,200,20\n")
    long.write_text("arrival_s,prompt_tokens,output_tokens\n0,9000,50\n")
    return clients, short, long


def test_rates_follow_the_windows_scaled_to_the_mean_and_each_client_keeps_its_lengths(inputs):
    clients, short, long = inputs
    # Windows 0 and 1 (the third is outside the span): 5 requests/s in 2 windows on average, scaled to 2 req/s.
    requests = generate(str(clients), 0, 1200, mean_rate=2.0, length_traces=[str(short), str(long)], seed=1)
    first = [r for r in requests if r[0] < 600]
    second = [r for r in requests if r[0] >= 600]
    assert len(first) == pytest.approx(0.8 * 600, rel=0.15) and len(second) == pytest.approx(3.2 * 600, rel=0.15)
    assert {p for _, p, _ in first} <= {100, 200}  # client 0 draws from the first length trace
    assert 9000 in {p for _, p, _ in second}  # client 1 from the second
    assert requests == sorted(requests) and requests[-1][0] < 1200


def test_the_cli_writes_a_trace_the_simulator_reads_and_bad_input_is_one_line(inputs, tmp_path, capsys):
    clients, short, _ = inputs
    out = tmp_path / "trace.csv"
    assert main(["--clients", str(clients), "--start-h", "0", "--hours", "0.3", "--mean-rate", "1",
                 "--lengths", str(short), "--out", str(out)]) == 0
    assert len(load_requests(out)) > 100
    assert main(["--clients", str(clients), "--start-h", "10", "--hours", "1", "--mean-rate", "1",
                 "--lengths", str(short), "--out", str(out)]) == 2
    assert "no active client window" in capsys.readouterr().err
    with pytest.raises(InputError, match="cannot read"):
        generate(str(tmp_path / "missing.csv"), 0, 600, 1.0, [str(short)])
