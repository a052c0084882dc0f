//! The command line: `app [serve [--banner] | migrate | seed | token --user N [--admin] | audit]`.

use anyhow::{Context, bail};
use concert_domain::UserId;

pub const USAGE: &str = "usage: app <command>

commands:
  serve [--banner]        run the HTTP service (the default); --banner prints the
                          demo URLs and tokens once the port is bound
  migrate                 create the database if missing and run pending migrations
  seed                    load the demo catalogue (idempotent)
  token --user N [--admin]
                          print a bearer token for user N (valid 24 hours);
                          --admin adds the catalogue-administration role
  audit                   check the stored data's invariants; print every violation
                          with its ids, exit 1 on any

Settings come from the environment or a .env file: see README.md.";

/// A parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Help,
    Serve { banner: bool },
    Migrate,
    Seed,
    Token { user: UserId, admin: bool },
    Audit,
}

/// Parses the arguments after the program name.
pub fn parse(args: &[String]) -> anyhow::Result<Command> {
    let Some((command, rest)) = args.split_first() else {
        return Ok(Command::Serve { banner: false });
    };
    let flags = Flags::split(rest)?;
    let command = match command.as_str() {
        "-h" | "--help" | "help" => Command::Help,
        "serve" => Command::Serve {
            banner: flags.switch("banner"),
        },
        "migrate" => Command::Migrate,
        "seed" => Command::Seed,
        "audit" => Command::Audit,
        "token" => {
            let raw = flags
                .value("user")
                .context("`app token` needs the user: app token --user N [--admin]")?;
            let user = raw
                .parse::<i64>()
                .ok()
                .and_then(|n| UserId::new(n).ok())
                .with_context(|| format!("--user takes a positive integer, not {raw:?}"))?;
            Command::Token {
                user,
                admin: flags.switch("admin"),
            }
        }
        other => bail!("unknown command {other:?}\n\n{USAGE}"),
    };
    flags.finish(command)
}

/// `--name value`, `--name=value` and `--switch` arguments, each taken at
/// most once; anything not taken is an error.
struct Flags {
    given: Vec<(String, Option<String>)>,
    taken: std::cell::RefCell<Vec<String>>,
}

impl Flags {
    fn split(args: &[String]) -> anyhow::Result<Flags> {
        let mut given = Vec::new();
        let mut iter = args.iter().peekable();
        while let Some(arg) = iter.next() {
            let Some(flag) = arg.strip_prefix("--") else {
                bail!("unexpected argument {arg:?}\n\n{USAGE}");
            };
            match flag.split_once('=') {
                Some((name, value)) => given.push((name.to_owned(), Some(value.to_owned()))),
                None => {
                    let value = iter
                        .next_if(|next| !next.starts_with("--"))
                        .map(|v| v.to_owned());
                    given.push((flag.to_owned(), value));
                }
            }
        }
        Ok(Flags {
            given,
            taken: Default::default(),
        })
    }

    fn value(&self, name: &str) -> Option<String> {
        self.taken.borrow_mut().push(name.to_owned());
        self.given
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.clone())
    }

    fn switch(&self, name: &str) -> bool {
        self.taken.borrow_mut().push(name.to_owned());
        self.given.iter().any(|(n, v)| n == name && v.is_none())
    }

    fn finish(self, command: Command) -> anyhow::Result<Command> {
        let taken = self.taken.borrow();
        if let Some((name, _)) = self.given.iter().find(|(n, _)| !taken.contains(n)) {
            bail!("unknown option --{name}\n\n{USAGE}");
        }
        if let Some((name, _)) = self
            .given
            .iter()
            .enumerate()
            .find(|(i, (n, _))| self.given[..*i].iter().any(|(m, _)| m == n))
            .map(|(_, g)| g)
        {
            bail!("--{name} given twice");
        }
        Ok(command)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(line: &str) -> anyhow::Result<Command> {
        let args: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
        parse(&args)
    }

    #[test]
    fn serve_is_the_default() {
        assert_eq!(run("").unwrap(), Command::Serve { banner: false });
        assert_eq!(
            run("serve --banner").unwrap(),
            Command::Serve { banner: true }
        );
        assert_eq!(run("--help").unwrap(), Command::Help);
    }

    #[test]
    fn token_takes_the_user_in_either_form() {
        let user5 = Command::Token {
            user: UserId::from(5),
            admin: false,
        };
        assert_eq!(run("token --user 5").unwrap(), user5);
        assert_eq!(run("token --user=5").unwrap(), user5);
        assert_eq!(
            run("token --admin --user 1").unwrap(),
            Command::Token {
                user: UserId::from(1),
                admin: true
            }
        );
    }

    #[test]
    fn mistakes_say_what_is_missing() {
        let missing = run("token").unwrap_err().to_string();
        assert!(missing.contains("--user N"), "{missing}");
        assert!(run("token --user 0").is_err());
        assert!(run("token --user x").is_err());
        assert!(run("token --user").is_err());
        assert!(run("token --user 1 --user 2").is_err());
        assert!(run("token --user 1 --frobnicate").is_err());
        assert!(run("migrate now").is_err());
        assert_eq!(run("audit").unwrap(), Command::Audit);
        assert!(run("audit --fix").is_err());
        assert!(run("launch").unwrap_err().to_string().contains("usage"));
    }
}
