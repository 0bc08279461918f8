//! `sluice-bench`: the benchmark harness (issue 5). Each subcommand measures one part and
//! writes its JSON file into `--out`; `report` renders docs/benchmarks.md from them.
//! `bash infra/bench.sh` runs them all, in order, with the engines and release builds.

use std::path::PathBuf;
use std::time::Duration;

use sluice_tests::bench::{self, coldstart, throughput};

const USAGE: &str = "\
sluice-bench <COMMAND> --out <DIR> [OPTIONS]

COMMANDS:
    requests     AWS requests per unit of work on ministack (SLUICE_MINISTACK_ENDPOINT)
    coldstart    spawn to first Runtime API /next:  --bin <name>=<path> ... [--runs N]
    throughput   local intake vs bare axum:  --sluice-local <path> --hello <path>
                 [--concurrency C] [--count N] [--seconds S] [--warmup N]
    cpu          CPU per event on ministack:  --hello <path> [--events N] [--repetitions R]
    contention   one connector item, one semaphore on DynamoDB Local
                 (SLUICE_DYNAMODB_LOCAL_ENDPOINT)  [--concurrency C] [--seconds S]
    report       renders --doc <file> from the JSON in --out  [--command <text>];
                 exits 2 if a part's file is missing (the report says \"not measured\")
";

#[derive(Debug, Default)]
struct Args {
    out: Option<PathBuf>,
    bins: Vec<coldstart::Target>,
    values: std::collections::BTreeMap<String, String>,
}

impl Args {
    fn parse(args: impl Iterator<Item = String>) -> Result<Self, String> {
        let mut parsed = Args::default();
        let mut args = args.peekable();
        while let Some(flag) = args.next() {
            let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
            match flag.as_str() {
                "--out" => parsed.out = Some(PathBuf::from(value)),
                "--bin" => {
                    let (name, path) = value
                        .split_once('=')
                        .ok_or_else(|| format!("--bin wants <name>=<path>, not {value:?}"))?;
                    parsed.bins.push(coldstart::Target {
                        name: name.to_owned(),
                        path: PathBuf::from(path),
                    });
                }
                f if f.starts_with("--") => {
                    parsed.values.insert(f[2..].to_owned(), value);
                }
                other => return Err(format!("unexpected argument {other:?}")),
            }
        }
        Ok(parsed)
    }

    fn number<T: std::str::FromStr>(&self, name: &str, default: T) -> Result<T, String> {
        match self.values.get(name) {
            Some(v) => v
                .parse()
                .map_err(|_| format!("--{name} needs a number, not {v:?}")),
            None => Ok(default),
        }
    }

    fn path(&self, name: &str) -> Result<PathBuf, String> {
        self.values
            .get(name)
            .map(PathBuf::from)
            .ok_or_else(|| format!("--{name} <path> is required"))
    }
}

#[tokio::main]
async fn main() {
    let mut argv = std::env::args().skip(1);
    let command = argv.next().unwrap_or_default();
    if command.is_empty() || command == "--help" || command == "-h" {
        print!("{USAGE}");
        return;
    }
    match run(&command, argv).await {
        Ok(code) => std::process::exit(code),
        Err(error) => {
            eprintln!("sluice-bench {command}: {error}");
            std::process::exit(1);
        }
    }
}

async fn run(command: &str, argv: impl Iterator<Item = String>) -> Result<i32, String> {
    let args = Args::parse(argv)?;
    let out = args.out.clone().ok_or("--out <DIR> is required")?;
    let result = match command {
        "requests" => bench::requests::run(&out).await?,
        "coldstart" => {
            if args.bins.is_empty() {
                return Err("coldstart needs --bin <name>=<path> (one named hello)".into());
            }
            coldstart::run(&out, &args.bins, args.number("runs", 25)?).await?
        }
        "throughput" => {
            let servers = throughput::Servers {
                sluice_local: args.path("sluice-local")?,
                hello: args.path("hello")?,
            };
            let load = throughput::Load {
                concurrency: args.number("concurrency", 32)?,
                count: args.number("count", 100_000)?,
                max_duration: Duration::from_secs(args.number("seconds", 20)?),
                warmup: args.number("warmup", 500)?,
            };
            throughput::run(&out, &servers, load).await?
        }
        "cpu" => {
            bench::cpu::run(
                &out,
                &args.path("hello")?,
                args.number("events", 300)?,
                args.number("repetitions", 3)?,
            )
            .await?
        }
        "contention" => {
            bench::contention::run(
                &out,
                args.number("concurrency", 16)?,
                Duration::from_secs(args.number("seconds", 10)?),
            )
            .await?
        }
        "report" => {
            let doc = args.path("doc")?;
            let command_line = args
                .values
                .get("command")
                .cloned()
                .unwrap_or_else(|| "bash infra/bench.sh".into());
            let (markdown, missing) = bench::report::render(&out, &command_line);
            std::fs::write(&doc, markdown)
                .map_err(|e| format!("writing {}: {e}", doc.display()))?;
            println!("wrote {}", doc.display());
            if !missing.is_empty() {
                eprintln!("not measured (missing): {}", missing.join(", "));
                return Ok(2);
            }
            return Ok(0);
        }
        other => return Err(format!("unknown command {other:?}\n{USAGE}")),
    };
    println!(
        "{}",
        serde_json::to_string_pretty(&result).unwrap_or_default()
    );
    Ok(0)
}
