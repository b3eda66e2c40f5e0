//! `strata token`: make and check the JWTs brokers accept when `[auth]` is on —
//! `create` signs one for a role (HS256 with a secret file, RS256/ES256 with a private
//! key), `validate` checks one with the same settings a broker uses and prints its claims.

use clap::{Args, Subcommand};
use std::path::PathBuf;
use strata_net::auth::{AuthSettings, Claims, SigningKey};

#[derive(Args)]
pub struct TokenArgs {
    #[command(subcommand)]
    command: TokenCommand,
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Print a token for a role (its `sub` claim).
    Create {
        /// The role the token authenticates as.
        #[arg(long)]
        subject: String,
        /// HS256: the shared secret file (at least 32 bytes) brokers also read.
        #[arg(
            long,
            conflicts_with = "private_key_file",
            required_unless_present = "private_key_file"
        )]
        secret_file: Option<PathBuf>,
        /// RS256 or ES256: the private key (PEM) whose public key brokers read.
        #[arg(long)]
        private_key_file: Option<PathBuf>,
        /// Expire after this long: 30s, 15m, 12h, 30d (default: never, as in Pulsar).
        #[arg(long)]
        expiry: Option<String>,
        /// `kid` header (picks the key in a JWKS).
        #[arg(long)]
        key_id: Option<String>,
        #[arg(long)]
        audience: Option<String>,
        #[arg(long)]
        issuer: Option<String>,
    },
    /// Check a token as a broker would and print its claims (JSON); fails if invalid.
    Validate {
        /// The token (or - to read it from standard input).
        token: String,
        #[arg(long)]
        secret_file: Option<PathBuf>,
        #[arg(long)]
        public_key_file: Option<PathBuf>,
        #[arg(long)]
        jwks_file: Option<PathBuf>,
        #[arg(long)]
        audience: Option<String>,
        #[arg(long)]
        issuer: Option<String>,
    },
}

/// Seconds of `30s`, `15m`, `12h`, `30d` or a bare number of seconds.
fn parse_duration(s: &str) -> anyhow::Result<u64> {
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = n
        .parse()
        .map_err(|_| anyhow::anyhow!("--expiry {s:?}: expected a number and a unit (s, m, h, d)"))?;
    let mult = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => anyhow::bail!("--expiry {s:?}: unknown unit {unit:?} (s, m, h, d)"),
    };
    n.checked_mul(mult)
        .ok_or_else(|| anyhow::anyhow!("--expiry {s:?} is too long"))
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub fn run(a: TokenArgs) -> anyhow::Result<()> {
    match a.command {
        TokenCommand::Create {
            subject,
            secret_file,
            private_key_file,
            expiry,
            key_id,
            audience,
            issuer,
        } => {
            anyhow::ensure!(!subject.is_empty(), "--subject must not be empty");
            let key = match (secret_file, private_key_file) {
                (Some(f), None) => SigningKey::secret_file(&f),
                (None, Some(f)) => SigningKey::private_key_file(&f),
                _ => anyhow::bail!("give --secret-file (HS256) or --private-key-file (RS256/ES256)"),
            }
            .map_err(anyhow::Error::msg)?;
            let exp = expiry.map(|e| parse_duration(&e)).transpose()?.map(|s| now() + s);
            let claims = Claims {
                sub: subject,
                exp,
                iat: Some(now()),
                aud: audience,
                iss: issuer,
            };
            let token = strata_net::auth::create(&key, &claims, key_id.as_deref()).map_err(anyhow::Error::msg)?;
            println!("{token}");
            Ok(())
        }
        TokenCommand::Validate {
            token,
            secret_file,
            public_key_file,
            jwks_file,
            audience,
            issuer,
        } => {
            let token = if token == "-" {
                std::io::read_to_string(std::io::stdin())?.trim().to_string()
            } else {
                token
            };
            let settings = AuthSettings {
                enabled: true,
                secret_file,
                public_key_file,
                jwks_file,
                audience,
                issuer,
                ..Default::default()
            };
            let v = settings
                .verifier()
                .map_err(|e| anyhow::anyhow!(e.replace("auth.", "--").replace('_', "-")))?
                .expect("enabled");
            let claims = v.verify(&token).map_err(|e| anyhow::anyhow!("invalid token: {e}"))?;
            println!("{}", serde_json::to_string(&claims)?);
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn expiries_parse_with_units() {
        assert_eq!(super::parse_duration("30").unwrap(), 30);
        assert_eq!(super::parse_duration("15m").unwrap(), 900);
        assert_eq!(super::parse_duration("2d").unwrap(), 172_800);
        assert!(super::parse_duration("1w").is_err());
        assert!(super::parse_duration("h").is_err());
        assert!(super::parse_duration("99999999999999999999d").is_err());
    }
}
