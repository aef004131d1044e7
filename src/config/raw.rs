//! The plugin configuration as read: one JSON object, a key given twice refused (serde_json's
//! own map would keep the last), each key taken once by name and type (`Fields`), and
//! whatever is left an unknown key, with the known key it most likely misspells. No value is
//! judged here (that is `config::validate`), and no error quotes a value.

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::error::ConfigError;

/// Every key of the plugin configuration, in the order of `docs/configuration.md`. The parser can
/// only read a key listed here, an unknown key is matched against this list for a suggestion, and
/// a unit test checks that the configuration reference documents exactly these keys.
pub const KNOWN_KEYS: &[&str] = &[
    "login_cluster",
    "login_authority",
    "login_upstream_path",
    "login_timeout_ms",
    "login_refresh_path",
    "login_logout_path",
    "refresh_cluster",
    "refresh_authority",
    "refresh_timeout_ms",
    "login_path",
    "refresh_path",
    "logout_path",
    "login_page",
    "public_paths",
    "bypass_cors_preflight",
    "trusted_origins",
    "access_ttl_s",
    "refresh_ttl_s",
    "clock_skew_s",
    "access_secret_env",
    "refresh_secret_env",
    "cookie_secure",
    "cookie_same_site",
    "cookie_domain",
    "access_cookie",
    "refresh_cookie",
    "upstream_access_cookie",
    "upstream_refresh_cookie",
    "user_id_header",
    "role_header",
    "max_login_body_bytes",
    "max_session_s",
];

/// Why the configuration is not a JSON object, without quoting any of it (serde's own message
/// can quote a value: `invalid type: string "..."`).
pub(crate) fn why_not_an_object(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let at = format!("line {} column {}", e.line(), e.column());
    match e.classify() {
        Category::Data => "it is JSON, but not an object".to_owned(),
        Category::Eof => format!("the JSON ends early, at {at}"),
        Category::Syntax | Category::Io => format!("not JSON at {at}"),
    }
}

/// The configuration object as read, with the first key that it gives twice (serde_json's own
/// map would silently keep the last value).
pub(crate) struct TopLevel {
    pub(crate) map: Map<String, Value>,
    pub(crate) duplicate: Option<String>,
}

impl<'de> serde::Deserialize<'de> for TopLevel {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Entries;
        impl<'de> serde::de::Visitor<'de> for Entries {
            type Value = TopLevel;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a map")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut entries: A) -> Result<TopLevel, A::Error> {
                let mut map = Map::new();
                let mut duplicate = None;
                while let Some((key, value)) = entries.next_entry::<String, Value>()? {
                    if duplicate.is_none() && map.contains_key(&key) {
                        duplicate = Some(key.clone());
                    }
                    map.insert(key, value);
                }
                Ok(TopLevel { map, duplicate })
            }
        }
        deserializer.deserialize_map(Entries)
    }
}

/// The configuration object, consumed key by key so that leftovers are unknown keys.
pub(crate) struct Fields(pub(crate) Map<String, Value>);

impl Fields {
    /// Removes `key` and converts it; JSON `null` counts as absent. Only a key of [`KNOWN_KEYS`]
    /// can be read: any other is refused, so the list cannot miss a key the parser reads.
    pub(crate) fn take<T: DeserializeOwned>(&mut self, key: &'static str, expected: &'static str) -> Result<Option<T>, ConfigError> {
        if !KNOWN_KEYS.contains(&key) {
            return Err(ConfigError::UnknownKey { key: key.to_owned(), did_you_mean: None });
        }
        match self.0.remove(key) {
            None | Some(Value::Null) => Ok(None),
            Some(value) => serde_json::from_value(value)
                .map(Some)
                .map_err(|_| ConfigError::WrongType { key, expected }),
        }
    }
    pub(crate) fn string(&mut self, key: &'static str) -> Result<Option<String>, ConfigError> {
        self.take(key, "a string")
    }
    pub(crate) fn number(&mut self, key: &'static str) -> Result<Option<u64>, ConfigError> {
        self.take(key, "a non-negative integer")
    }
    pub(crate) fn boolean(&mut self, key: &'static str) -> Result<Option<bool>, ConfigError> {
        self.take(key, "true or false")
    }
    /// A string that must be there; when it is not, names a key of the configuration that looks
    /// like a misspelling of it.
    pub(crate) fn required_string(&mut self, key: &'static str) -> Result<String, ConfigError> {
        match self.string(key)? {
            Some(value) => Ok(value),
            None => {
                let near_miss = self.0.keys().find(|k| is_near(k, key)).cloned();
                Err(ConfigError::Missing { key, near_miss })
            }
        }
    }
    /// Every key not read by now is unknown; the first one is reported, with the known key it is
    /// close to, if any.
    pub(crate) fn reject_leftovers(&self) -> Result<(), ConfigError> {
        match self.0.keys().next() {
            Some(key) => Err(ConfigError::UnknownKey { key: key.clone(), did_you_mean: closest_known_key(key) }),
            None => Ok(()),
        }
    }
}

/// The known key that `key` most likely misspells: after turning `camelCase` and `kebab-case`
/// into `snake_case`, at most two edits away (one for keys under six characters); ties go to the
/// key listed first.
pub fn closest_known_key(key: &str) -> Option<&'static str> {
    let mut best: Option<(usize, &'static str)> = None;
    for &known in KNOWN_KEYS {
        if let Some(d) = near_distance(key, known) {
            if best.is_none_or(|(b, _)| d < b) {
                best = Some((d, known));
            }
        }
    }
    best.map(|(_, known)| known)
}

pub(crate) fn is_near(written: &str, known: &str) -> bool {
    near_distance(written, known).is_some()
}

/// The edit distance between `written` (normalised to snake_case) and `known`, if it is small
/// enough to be a typo: at most 2, and at most a third of the known key's length.
pub(crate) fn near_distance(written: &str, known: &str) -> Option<usize> {
    // Keys longer than any known key by more than two characters cannot be near one; this also
    // bounds the work on a hostile configuration.
    if written.chars().count() > known.len() + 2 {
        return None;
    }
    let d = edit_distance(&snake_case(written), known);
    (d <= 2 && d * 3 <= known.len()).then_some(d)
}

/// `loginCluster`, `Login-Cluster` and `LOGIN_CLUSTER` all become `login_cluster`.
pub(crate) fn snake_case(key: &str) -> String {
    let mut out = String::with_capacity(key.len() + 4);
    let mut previous_lower = false;
    for c in key.chars() {
        if c == '-' || c == ' ' {
            out.push('_');
        } else if c.is_ascii_uppercase() && previous_lower {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c.to_ascii_lowercase());
        }
        previous_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
    }
    out
}

/// Levenshtein distance with adjacent transpositions (optimal string alignment), by characters.
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    const FAR: usize = usize::MAX / 4;
    let at = |row: &[usize], k: Option<usize>| k.and_then(|k| row.get(k)).copied().unwrap_or(FAR);
    let b: Vec<char> = b.chars().collect();
    // Rows of the table: two back (for transpositions), the previous one, the one being filled.
    let mut before: Vec<usize> = Vec::new();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    let mut last_a = None;
    for (i, ca) in a.chars().enumerate() {
        let mut current = Vec::with_capacity(b.len() + 1);
        current.push(i + 1);
        let mut last_b = None;
        for (j, &cb) in b.iter().enumerate() {
            let left = current.last().copied().unwrap_or(FAR);
            let mut d = (at(&previous, Some(j)) + usize::from(ca != cb))
                .min(at(&previous, Some(j + 1)) + 1)
                .min(left + 1);
            if last_a == Some(cb) && last_b == Some(ca) {
                d = d.min(at(&before, j.checked_sub(1)) + 1);
            }
            current.push(d);
            last_b = Some(cb);
        }
        before = std::mem::replace(&mut previous, current);
        last_a = Some(ca);
    }
    previous.last().copied().unwrap_or(FAR)
}
