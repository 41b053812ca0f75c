//! `wenke console`: the editor console's accounts from the command line,
//! where the first admin comes from.

use std::io::BufRead;

use anyhow::Context;
use bot::console::accounts::{AccountStore, NewAccount, Role};
use clap::Subcommand;

use crate::kb_cli::StoreArgs;

/// Console commands.
#[derive(Subcommand, Debug)]
pub enum ConsoleCommand {
    /// Creates a console account. The password is read from
    /// `WENKE_CONSOLE_PASSWORD` or, without it, from the first line of
    /// standard input.
    AddUser {
        /// The sign-in name (letters, digits, `.`, `_`, `-`).
        username: String,
        /// Its roles: editor, reviewer, staff, admin (repeat or separate by commas).
        #[arg(long = "role", required = true, value_delimiter = ',')]
        roles: Vec<String>,
        /// The name shown in the console and in entries' history.
        #[arg(long, default_value = "")]
        display_name: String,
    },
    /// Lists the console accounts.
    Users,
}

fn password() -> anyhow::Result<String> {
    if let Ok(password) = std::env::var("WENKE_CONSOLE_PASSWORD")
        && !password.is_empty()
    {
        return Ok(password);
    }
    eprintln!("password (one line on standard input):");
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("reading the password")?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

/// Runs a console command.
pub async fn run(store: &StoreArgs, command: ConsoleCommand) -> anyhow::Result<()> {
    let kb = store.open().await?;
    let accounts = AccountStore::open(kb.store())
        .await
        .context("opening the accounts")?;
    match command {
        ConsoleCommand::AddUser {
            username,
            roles,
            display_name,
        } => {
            let roles = roles
                .iter()
                .map(|name| {
                    Role::parse(name).with_context(|| {
                        format!("unknown role {name:?} (editor, reviewer, staff, admin)")
                    })
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let account = accounts
                .create(NewAccount {
                    username,
                    display_name,
                    roles,
                    password: password()?,
                })
                .await?;
            let roles: Vec<&str> = account.roles.iter().map(|r| r.as_str()).collect();
            println!("created {} ({})", account.username, roles.join(", "));
        }
        ConsoleCommand::Users => {
            for account in accounts.list().await? {
                let roles: Vec<&str> = account.roles.iter().map(|r| r.as_str()).collect();
                println!(
                    "{}\t{}\t{}{}",
                    account.username,
                    account.display_name,
                    roles.join(","),
                    if account.disabled { "\tdisabled" } else { "" }
                );
            }
        }
    }
    Ok(())
}
