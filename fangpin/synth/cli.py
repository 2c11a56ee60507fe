"""`fangpin synth`: generate the synthetic ledger (no heavy imports at module level)."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("synth")
    def synth(
        households: int = typer.Option(None, "--households", "-n", help="number of households (default: params.synth)"),
        quarters: int = typer.Option(None, "--quarters", "-q", help="number of quarters from params.synth.start_quarter"),
        seed: int = typer.Option(None, "--seed", help="random seed"),
        out: Path = typer.Option(None, "--out", help="output directory (default: params.paths.synth_dir)"),
        counties: int = typer.Option(None, "--counties", help="number of counties (default: params.synth.counties)"),
        by_county: bool = typer.Option(None, "--by-county/--one-simulation",
                                       help="a province: each county simulated as a parallel task into "
                                            "<out>/<county code>/ (default: params.synth.by_county)"),
        params_file: Path = typer.Option(None, "--params", help="params.yaml to use"),
    ) -> None:
        """生成模拟台账 (synthetic ledger, department signals and oracle) in the contract's format."""
        import time

        from rich.console import Console

        from fangpin.config import load_params
        from fangpin.progress import progress
        from fangpin.synth.write import generate

        p = load_params(params_file)
        sp = p.synth
        n = households or sp.households
        nq = quarters or sp.quarters
        sd = sp.seed if seed is None else seed
        n_counties = counties or sp.counties
        split = sp.by_county if by_county is None else by_county
        out_dir = out or p.paths.synth_dir
        from fangpin import quarters as Q

        last_year = Q.parse(Q.shift(sp.start_quarter, nq + p.labels.horizon_quarters))[0]
        for y in range(Q.parse(sp.start_quarter)[0] - 2, last_year + 1):
            p.line_for(y)  # a missing monitoring line is a clear error before any work
        t0 = time.perf_counter()
        with progress() as bar:
            if split:
                from fangpin.cluster import execution
                from fangpin.synth.write import generate_by_county

                if sp.snapshots != "quarterly" or sp.shift.quarter:
                    raise typer.BadParameter("--by-county writes quarterly snapshots without an injected shift "
                                             "(synth.snapshots / synth.shift are for one simulation)",
                                             param_hint="--by-county")
                task = bar.add_task("模拟各县 (counties)", total=n_counties)
                with execution(p, "synth", n) as ex:
                    stats = generate_by_county(out_dir, n, nq, sd, sp.start_quarter, p.line_for, n_counties,
                                               sp.townships_per_county, sp.villages_per_township,
                                               p.labels.horizon_quarters, sp.oracle_draws, ex,
                                               on_county=lambda c: bar.advance(task))
            else:
                task = bar.add_task("模拟季度 (quarters)", total=nq)
                stats = generate(out_dir, n, nq, sd, sp.start_quarter, p.line_for, n_counties,
                                 sp.townships_per_county, sp.villages_per_township, p.labels.horizon_quarters,
                                 sp.oracle_draws, on_quarter=lambda q: bar.advance(task),
                                 snapshots=sp.snapshots, shift=sp.shift)
        dt = time.perf_counter() - t0
        last = stats[-1]
        c = Console()
        kind = "" if sp.snapshots == "quarterly" else f", {len(stats)} annual snapshots"
        c.print(f"[bold]synthetic ledger[/bold] → {out_dir}  ({n:,} households × {nq} quarters{kind}, seed {sd}, "
                f"{dt:.1f} s" + (f"; {n_counties} counties as tasks, one folder each)" if split else ")"))
        c.print(f"  persons {last['persons']:,}; monitored households {last['monitored_households']:,} "
                f"({last['monitored_persons'] / max(last['persons'], 1):.2%} of persons); "
                f"new identifications {sum(s['identified'] for s in stats):,}; "
                f"department events {sum(s['events'] for s in stats):,}")
