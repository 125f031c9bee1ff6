//! Dev mode (`ward server --dev`, `ward up`): a server that initializes and
//! unseals itself with a key file kept in its data directory, so it can be
//! restarted on the same directory and keep its data. The key file makes
//! the seal meaningless, which is why dev mode says so loudly.

use std::path::{Path, PathBuf};

use ward_store::Store;
use ward_store::seal::MasterKey;
use zeroize::Zeroizing;

use crate::config::ServerConfig;
use crate::{ReadyServer, init, prepare_with_store};

/// The printed warning.
pub const WARNING: &str = "WARNING: dev mode. The master key and the admin token are stored in plain files in the data directory; never use dev mode for anything that matters.";

/// A dev server, ready to run, with the credentials clients need.
pub struct DevServer {
    /// The bound server.
    pub server: ReadyServer,
    /// The admin token.
    pub token: Zeroizing<String>,
    /// The data directory.
    pub data_dir: PathBuf,
}

fn write_private(path: &Path, data: &str) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    f.write_all(data.as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

fn read_private(path: &Path) -> Result<Zeroizing<String>, String> {
    std::fs::read_to_string(path)
        .map(|s| Zeroizing::new(s.trim().to_owned()))
        .map_err(|e| {
            format!(
                "{} is missing ({e}): this data directory was not created by dev mode; start a non-dev server on it instead",
                path.display()
            )
        })
}

/// Opens (initializing on first use) and unseals a dev server.
pub async fn start(config: ServerConfig) -> Result<DevServer, String> {
    let dir = config.data_dir.clone();
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700));
    }
    let key_path = dir.join("dev-master.key");
    let token_path = dir.join("dev-token");
    let store = Store::connect(&config.storage)
        .await
        .map_err(|e| e.to_string())?;
    let (master, token) = if store.is_initialized().await.map_err(|e| e.to_string())? {
        let key = read_private(&key_path)?;
        let master =
            MasterKey::from_base64(&key).map_err(|e| format!("{}: {e}", key_path.display()))?;
        (master, read_private(&token_path)?)
    } else {
        // Files first: if the process dies before the store commits, the
        // next start finds an uninitialized store and simply starts over.
        let master = MasterKey::generate().map_err(|e| e.to_string())?;
        let token = init::new_token();
        write_private(&key_path, &master.to_base64())?;
        write_private(&token_path, &token)?;
        let out = init::initialize_with(&store, &config, None, master, token)
            .await
            .map_err(|e| e.to_string())?;
        (out.master, out.admin_token)
    };
    let server = prepare_with_store(config, store).await?;
    server.unseal(master).await?;
    Ok(DevServer {
        server,
        token,
        data_dir: dir,
    })
}

impl DevServer {
    /// Writes `DATA_DIR/dev.env` (`export WARD_ADDR=… WARD_TOKEN=… WARD_CACERT=…`)
    /// atomically, so a script waiting for the file never reads half of it.
    pub fn write_env_file(&self) -> Result<PathBuf, String> {
        let path = self.data_dir.join("dev.env");
        let text = format!(
            "export WARD_ADDR={}\nexport WARD_TOKEN={}\nexport WARD_CACERT={}\n",
            self.server.url(),
            self.token.as_str(),
            self.server.cacert.display()
        );
        write_private(&path, &text)?;
        Ok(path)
    }
}
