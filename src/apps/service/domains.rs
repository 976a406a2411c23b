//! Custom domains: a request whose `Host` is exactly a domain given to an
//! app (any port) is served by the app's `live` alias. A domain belongs to
//! one app, is a DNS name, and is not under the service's `base_domain`.

use super::{AppError, AppService, DomainView};
use crate::store::AppStatus;

/// Longest DNS name (RFC 1035), without the root's dot.
const MAX_NAME: usize = 253;

impl AppService {
    /// Gives `domain` to the app; `409` when another app holds it.
    pub async fn put_domain(&self, name: &str, domain: &str) -> Result<DomainView, AppError> {
        let domain = check_domain(domain, &self.base_domain)?;
        let (app, record) = self.record(name).await?;
        if record.status == AppStatus::Removed {
            return Err(AppError::Conflict(format!(
                "app '{app}' was removed; deploy it again"
            )));
        }
        if let Some(owner) = self
            .store
            .add_domain(&domain, &app, crate::support::now_ms())
            .await?
        {
            return Err(AppError::Conflict(format!(
                "domain '{domain}' belongs to app '{owner}'; remove it there first"
            )));
        }
        if let Ok(mut domains) = self.domains.write() {
            domains.insert(domain.clone(), app.clone());
        }
        tracing::info!(app = %app, domain, "custom domain added");
        Ok(DomainView {
            domain,
            app: app.into_string(),
        })
    }

    /// Takes `domain` from the app; `404` when the app does not hold it.
    pub async fn delete_domain(&self, name: &str, domain: &str) -> Result<(), AppError> {
        let (app, _) = self.record(name).await?;
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        if !self.store.remove_domain(&domain, &app).await? {
            return Err(AppError::Missing(format!(
                "app '{app}' has no domain '{domain}'"
            )));
        }
        if let Ok(mut domains) = self.domains.write() {
            domains.remove(&domain);
        }
        tracing::info!(app = %app, domain, "custom domain removed");
        Ok(())
    }
}

/// A domain as kept: lowercase, without a final dot; refused unless it is a
/// DNS name of at least two labels (the last not all digits, so not an IP
/// address) outside `base_domain`.
fn check_domain(domain: &str, base_domain: &str) -> Result<String, AppError> {
    let invalid =
        |why: &str| AppError::Invalid(format!("invalid domain '{}': {why}", domain.escape_debug()));
    let name = domain
        .strip_suffix('.')
        .unwrap_or(domain)
        .to_ascii_lowercase();
    if name.is_empty() || name.len() > MAX_NAME {
        return Err(invalid("a DNS name has 1 to 253 characters"));
    }
    let labels: Vec<&str> = name.split('.').collect();
    if labels.len() < 2 {
        return Err(invalid("use a full name such as app.example.com"));
    }
    let label_ok = |label: &&str| {
        (1..=63).contains(&label.len())
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    if !labels.iter().all(label_ok) {
        return Err(invalid(
            "each label has 1 to 63 characters of a-z, 0-9 and '-', not starting or ending with '-'",
        ));
    }
    if labels
        .last()
        .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(invalid("an IP address is not a domain"));
    }
    let base = base_domain.to_ascii_lowercase();
    if name == base || name.ends_with(&format!(".{base}")) {
        return Err(invalid(&format!(
            "names under '{base}' are the service's own (<app>.{base})"
        )));
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::check_domain;

    #[test]
    fn domains_are_dns_names_outside_the_base_domain() {
        let ok = |d: &str| check_domain(d, "apps.test").unwrap();
        assert_eq!(ok("Shop.Example.COM."), "shop.example.com");
        assert_eq!(ok("a-b.example.com"), "a-b.example.com");
        for bad in [
            "",
            "localhost",
            "-a.example.com",
            "a..example.com",
            "a_b.example.com",
            "10.0.0.1",
            "shop.apps.test",
            "apps.test",
            "xn--é.example.com",
            &format!("{}.com", "a".repeat(64)),
            "a b.example.com",
        ] {
            assert!(check_domain(bad, "apps.test").is_err(), "{bad:?}");
        }
    }
}
