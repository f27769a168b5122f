//! `herald migrate`: the command line around [`herald::migrate`].

use std::io::Read;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use herald::migrate::{self, Options, Outcome, Source};

/// Arguments of `herald migrate`.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Examples:\n  kubectl get ipaddresspools,l2advertisements,bgpadvertisements,bgppeers,bfdprofiles,\
communities -A -o yaml > metallb.yaml\n  herald migrate --from metallb metallb.yaml > herald.yaml\n  herald migrate \
--from openelb --from-cluster > herald.yaml\nThe YAML goes to standard output (or --output), the report to standard \
error (or --report). Nothing is written to the cluster."
)]
pub struct MigrateArgs {
    /// The project migrated from.
    #[arg(long, value_enum)]
    pub from: Source,
    /// Files of its objects (YAML or JSON, several documents or a List each); `-` reads standard input. Services and
    /// Namespaces among them are checked: whether each Service keeps its IPs.
    pub files: Vec<PathBuf>,
    /// Read its objects, the Services and the Namespaces through the API (the kubeconfig kubectl would use).
    #[arg(long)]
    pub from_cluster: bool,
    /// Herald's namespace, where the Secrets BgpPeers refer to must be.
    #[arg(long, default_value = "herald-system")]
    pub namespace: String,
    /// Whether the agents take Services without a loadBalancerClass (the agent's --default-class).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub default_class: bool,
    /// Write the YAML here instead of standard output.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    /// Write the report (Markdown) here instead of standard error.
    #[arg(long)]
    pub report: Option<PathBuf>,
}

pub fn run(args: MigrateArgs) -> Result<()> {
    if args.files.is_empty() && !args.from_cluster {
        bail!(
            "give files of {}'s objects (or - for standard input), or --from-cluster",
            args.from
        );
    }
    let mut objects = Vec::new();
    for file in &args.files {
        let (origin, text) = if file.as_os_str() == "-" {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("reading standard input")?;
            ("standard input".to_string(), text)
        } else {
            let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
            (file.display().to_string(), text)
        };
        objects.extend(migrate::parse_documents(&origin, &text).map_err(anyhow::Error::msg)?);
    }
    if args.from_cluster {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let read = rt.block_on(async {
            let client = kube::Client::try_default()
                .await
                .context("connecting to the API server")?;
            migrate::cluster::read(client, args.from).await
        })?;
        objects.extend(read);
    }
    let options = Options {
        namespace: args.namespace.clone(),
        default_class: args.default_class,
    };
    let result = migrate::migrate(args.from, objects, &options);
    let yaml = migrate::render_yaml(&result, args.from).map_err(anyhow::Error::msg)?;
    let report = migrate::render_report(&result, args.from);
    match &args.output {
        Some(path) => std::fs::write(path, yaml).with_context(|| format!("writing {}", path.display()))?,
        None => print!("{yaml}"),
    }
    match &args.report {
        Some(path) => std::fs::write(path, &report).with_context(|| format!("writing {}", path.display()))?,
        None => eprint!("{report}"),
    }
    let losing = result
        .services
        .iter()
        .filter(|s| matches!(s.outcome, Outcome::Loses { .. }))
        .count();
    if losing > 0 {
        eprintln!("warning: {losing} Service(s) would not keep their IPs under this configuration: see the report");
    }
    Ok(())
}
