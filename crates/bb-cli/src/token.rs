//! `bb token new NAME --output FILE`: a bearer token for a tokens file.
//! The token goes to a new file of mode 0600; the line for the servers'
//! `tokens_file` (`NAME = "<hex SHA-256 of the token>"`) to stdout. The
//! token itself is never printed.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::Context;

#[derive(clap::Subcommand)]
pub enum TokenCommand {
    /// Make a token: write it to a new file (mode 0600) and print the line
    /// that lets it in, for the servers' tokens file.
    New(NewArgs),
}

#[derive(clap::Args)]
pub struct NewArgs {
    /// The identity the token stands for, as the policy names it.
    name: String,
    /// The new file to hold the token (refused if it exists).
    #[arg(long, short)]
    output: PathBuf,
}

pub fn run(command: TokenCommand) -> anyhow::Result<()> {
    let TokenCommand::New(args) = command;
    // The name is a TOML key in the tokens file; keep it one a policy can
    // name without quoting surprises.
    if args.name.is_empty() || !args.name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
        anyhow::bail!("token name {:?}: use letters, digits, '-', '_' and '.'", args.name);
    }
    let token = random_token()?;
    write_secret(&args.output, &format!("{token}\n")).with_context(|| args.output.display().to_string())?;
    let line = toml::Table::from_iter([(args.name, bb_util::auth::tokens::hash(&token).into())]);
    print!("{}", toml::to_string(&line)?);
    Ok(())
}

/// 256 random bits, hex.
pub fn random_token() -> anyhow::Result<String> {
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(hex::encode(bytes))
}

/// Writes `contents` to a new file only its owner can read.
pub fn write_secret(path: &Path, contents: &str) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.write(true).create_new(true).open(path)?;
    std::io::Write::write_all(&mut file, contents.as_bytes())
}
