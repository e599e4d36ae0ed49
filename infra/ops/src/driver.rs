//! The real [`Cluster`]: the MongoDB driver, one client for the router (`MONGODB_URI`) and
//! one direct connection per replica-set member, all with the same credentials and TLS.
//!
//! With `--keyfile` every connection authenticates as the internal `__system` user (source
//! `local`, SCRAM mechanism negotiated with the server) using the keyfile's contents with all
//! whitespace removed — exactly how members authenticate to each other — so bootstrap works
//! under keyfile auth before any user exists. Without it, the URI's own credentials are used.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use auditlog_common::schema::{self, Retention, StorageReport};
use auditlog_common::settings::MongoSettings;
use auditlog_common::shutdown::close_client;
use auditlog_common::store::{ServerInfo, Store};
use auditlog_common::StoreError;
use mongodb::bson::Document;
use mongodb::options::{ClientOptions, Credential, ServerAddress, Tls, TlsOptions};
use mongodb::Client;

use crate::cli::AuthArgs;
use crate::cluster::{Cluster, CmdError, Target};
use crate::error::OpsError;

/// Short timeouts: bootstrap retries with its own backoff, and a hung member must not stall
/// the observation of the others.
const SELECT_TIMEOUT: Duration = Duration::from_secs(5);

pub struct DriverCluster {
    store: Store,
    member_options: ClientOptions,
    members: Mutex<HashMap<String, Client>>,
}

impl DriverCluster {
    pub async fn connect(settings: &MongoSettings, auth: &AuthArgs) -> Result<Self, OpsError> {
        let mut options = ClientOptions::parse(&settings.mongodb_uri)
            .await
            .map_err(|e| OpsError::Store(StoreError::Config(e)))?;
        options.app_name = Some("auditlog-ops".into());
        options.server_selection_timeout = Some(SELECT_TIMEOUT);
        options.connect_timeout = Some(SELECT_TIMEOUT);
        if let Some(path) = &auth.keyfile {
            options.credential = Some(system_credential(path)?);
        }
        if auth.tls_ca_file.is_some() || auth.tls_certificate_key_file.is_some() {
            let mut tls = match options.tls.take() {
                Some(Tls::Enabled(t)) => t,
                _ => TlsOptions::default(),
            };
            // The driver reads these only when it connects, and its error then looks like an
            // unreachable server; a missing file is a configuration error, said at once.
            for path in [&auth.tls_ca_file, &auth.tls_certificate_key_file]
                .into_iter()
                .flatten()
            {
                std::fs::File::open(path).map_err(|e| {
                    OpsError::Config(format!("cannot read TLS file {}: {e}", path.display()))
                })?;
            }
            if let Some(ca) = &auth.tls_ca_file {
                tls.ca_file_path = Some(ca.clone());
            }
            if let Some(pem) = &auth.tls_certificate_key_file {
                tls.cert_key_file_path = Some(pem.clone());
            }
            options.tls = Some(Tls::Enabled(tls));
        }

        let mut member_options = options.clone();
        member_options.repl_set_name = None;
        member_options.direct_connection = Some(true);

        let client =
            Client::with_options(options).map_err(|e| OpsError::Store(StoreError::Config(e)))?;
        Ok(Self {
            store: Store {
                client,
                db_name: settings.db_name.clone(),
                collection_name: settings.collection.clone(),
                server_selection_timeout: SELECT_TIMEOUT,
            },
            member_options,
            members: Mutex::new(HashMap::new()),
        })
    }

    /// The router connection as the shared [`Store`].
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Shuts every client down — the router's and each member's — before the runtime stops
    /// (see [`close_client`]).
    pub async fn close(&self) {
        let members: Vec<Client> = self
            .members
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
            .map(|(_, c)| c)
            .collect();
        for client in members.iter().chain([&self.store.client]) {
            close_client(client).await;
        }
    }

    fn member(&self, host: &str) -> Result<Client, CmdError> {
        let mut members = self.members.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = members.get(host) {
            return Ok(c.clone());
        }
        let mut options = self.member_options.clone();
        options.hosts = vec![ServerAddress::parse(host).map_err(CmdError::from)?];
        let client = Client::with_options(options).map_err(CmdError::from)?;
        members.insert(host.to_owned(), client.clone());
        Ok(client)
    }
}

/// `__system`/`local` with the keyfile's contents as password. MongoDB ignores whitespace
/// anywhere in a keyfile, so we remove it all, as mongod does.
fn system_credential(path: &Path) -> Result<Credential, OpsError> {
    let raw = std::fs::read_to_string(path)
        .map_err(|e| OpsError::Config(format!("cannot read keyfile {}: {e}", path.display())))?;
    let key = keyfile_password(&raw);
    if key.is_empty() {
        return Err(OpsError::Config(format!(
            "keyfile {} is empty",
            path.display()
        )));
    }
    Ok(Credential::builder()
        .username("__system".to_owned())
        .source("local".to_owned())
        .password(key)
        .build())
}

pub fn keyfile_password(raw: &str) -> String {
    raw.chars().filter(|c| !c.is_whitespace()).collect()
}

impl Cluster for DriverCluster {
    async fn run(
        &self,
        target: &Target,
        db: &str,
        command: Document,
    ) -> Result<Document, CmdError> {
        let client = match target {
            Target::Router => self.store.client.clone(),
            Target::Member(host) => self.member(host)?,
        };
        Ok(client.database(db).run_command(command).await?)
    }

    async fn ensure_storage(
        &self,
        server: &ServerInfo,
        retention: Retention,
    ) -> Result<StorageReport, CmdError> {
        schema::ensure_storage(&self.store, server, retention)
            .await
            .map_err(|e| match e {
                StoreError::Command { source, .. } | StoreError::Config(source) => {
                    CmdError::from(source)
                }
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyfile_whitespace_is_ignored_anywhere() {
        assert_eq!(keyfile_password("abc def\n\tghi\r\n"), "abcdefghi");
    }
}
