//! The command line: `app [serve [--banner] | migrate | seed | token --user N [--admin] |
//! audit | events tail|status|replay]`.

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use concert_domain::{Stream, UserId};

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
  events tail [--stream S] [--from-start] [--count N]
                          print events as they are published, one JSON line
                          each (S: reservations, points or payments; default
                          all); --from-start first prints what the streams hold
  events status           outbox backlog and lag, streams, consumer groups,
                          dead letters
  events replay --since T publish again every event published since T
                          (RFC 3339), under the same ids

Settings come from the environment or a .env file: see README.md.";

/// A parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Help,
    Serve {
        banner: bool,
    },
    Migrate,
    Seed,
    Token {
        user: UserId,
        admin: bool,
    },
    Audit,
    EventsTail {
        stream: Option<Stream>,
        from_start: bool,
        count: Option<u64>,
    },
    EventsStatus,
    EventsReplay {
        since: DateTime<Utc>,
    },
}

/// Parses the arguments after the program name.
pub fn parse(args: &[String]) -> anyhow::Result<Command> {
    let Some((command, rest)) = args.split_first() else {
        return Ok(Command::Serve { banner: false });
    };
    if command == "events" {
        return parse_events(rest);
    }
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

/// `app events <tail | status | replay> ...`.
fn parse_events(args: &[String]) -> anyhow::Result<Command> {
    let Some((sub, rest)) = args.split_first() else {
        bail!("`app events` needs a command: tail, status or replay\n\n{USAGE}");
    };
    let flags = Flags::split(rest)?;
    let command = match sub.as_str() {
        "tail" => {
            let stream = flags
                .value("stream")
                .map(|s| {
                    s.parse::<Stream>()
                        .map_err(|e| anyhow::anyhow!("--stream: {e}"))
                })
                .transpose()?;
            let count = flags
                .value("count")
                .map(|n| {
                    n.parse::<u64>()
                        .with_context(|| format!("--count takes a number, not {n:?}"))
                })
                .transpose()?;
            Command::EventsTail {
                stream,
                from_start: flags.switch("from-start"),
                count,
            }
        }
        "status" => Command::EventsStatus,
        "replay" => {
            let raw = flags
                .value("since")
                .context("`app events replay` needs --since <RFC 3339 time>")?;
            let since = DateTime::parse_from_rfc3339(&raw)
                .with_context(|| format!("--since takes an RFC 3339 time, not {raw:?}"))?
                .with_timezone(&Utc);
            Command::EventsReplay { since }
        }
        other => bail!("unknown events command {other:?}\n\n{USAGE}"),
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
    fn events_commands_parse() {
        assert_eq!(
            run("events tail").unwrap(),
            Command::EventsTail {
                stream: None,
                from_start: false,
                count: None
            }
        );
        assert_eq!(
            run("events tail --stream points --from-start --count 3").unwrap(),
            Command::EventsTail {
                stream: Some(Stream::Points),
                from_start: true,
                count: Some(3)
            }
        );
        assert_eq!(run("events status").unwrap(), Command::EventsStatus);
        assert_eq!(
            run("events replay --since 2030-01-02T03:04:05Z").unwrap(),
            Command::EventsReplay {
                since: DateTime::parse_from_rfc3339("2030-01-02T03:04:05Z")
                    .unwrap()
                    .with_timezone(&Utc)
            }
        );
        assert!(run("events").is_err());
        assert!(run("events tail --stream seats").is_err());
        assert!(run("events tail --count x").is_err());
        assert!(run("events replay").is_err());
        assert!(run("events replay --since yesterday").is_err());
        assert!(run("events purge").is_err());
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
