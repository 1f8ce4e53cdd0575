//! Modules: uploaded wasm components, named by their sha256 digest.

use serde::{Deserialize, Serialize};

use crate::Resource;
use crate::kinds::info;
use crate::meta::ObjectMeta;
use crate::validation::ValidationError;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Module {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    pub spec: ModuleSpec,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ModuleSpec {
    /// `sha256:<hex>`; the object's name is the hex part.
    pub digest: String,
    pub size: u64,
    /// `http` (wasi:http/proxy) or `cli` (wasi:cli/command).
    pub world: String,
}

/// The worlds a pod may target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModuleWorld {
    Http,
    Cli,
}

impl ModuleWorld {
    pub fn as_str(self) -> &'static str {
        match self {
            ModuleWorld::Http => "http",
            ModuleWorld::Cli => "cli",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "http" => Some(ModuleWorld::Http),
            "cli" => Some(ModuleWorld::Cli),
            _ => None,
        }
    }
}

impl Resource for Module {
    const KIND: &'static crate::KindInfo = info::MODULE;
    crate::resource_meta!();
    fn validate(&self) -> Result<(), ValidationError> {
        if ModuleWorld::parse(&self.spec.world).is_none() {
            return Err(ValidationError::new(
                "spec.world",
                format!("{:?} is not http or cli", self.spec.world),
            ));
        }
        if self.spec.digest.strip_prefix("sha256:") != Some(self.metadata.name.as_str()) {
            return Err(ValidationError::new(
                "metadata.name",
                "must be the hex digest of spec.digest".to_string(),
            ));
        }
        Ok(())
    }
}
