//! `[[delegation.authorization_details]]`: the RFC 9396 types agents may request, each with its
//! fields and their types; and each entry's `authorization_details` list, checked against them.

use super::{RawEntry, Validator};
use crate::registry::delegation::{DetailFields, DetailTypes, FieldType, valid_detail_name};
use serde::Deserialize;
use std::collections::BTreeMap;
use toml::Spanned;

/// Declared types one config may hold, and fields one type may have.
const MAX_TYPES: usize = 64;
const MAX_FIELDS: usize = 64;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDetailType {
    #[serde(rename = "type")]
    type_: Spanned<String>,
    fields: Spanned<BTreeMap<String, Spanned<String>>>,
}

const NAME_FIX: &str = "use letters, digits and _ (not starting with a digit, at most 64 bytes, not a Cedar keyword \
     or \"type\"), e.g. flight_booking";

impl Validator<'_> {
    /// The declared types, each checked: a valid and unique name, at least one field, each field
    /// named like a Cedar attribute and typed String, Long, Bool or Set<String>.
    pub(super) fn detail_types(&mut self, raw: &[Spanned<RawDetailType>]) -> DetailTypes {
        let mut types: BTreeMap<String, DetailFields> = BTreeMap::new();
        let mut seen = std::collections::BTreeSet::new();
        if raw.len() > MAX_TYPES {
            self.issue(
                &raw[MAX_TYPES],
                &format!("delegation.authorization_details[{MAX_TYPES}]"),
                format!("more than {MAX_TYPES} types are declared"),
                "declare only the types agents request",
            );
        }
        for (i, r) in raw.iter().enumerate().take(MAX_TYPES) {
            let key = |k: &str| format!("delegation.authorization_details[{i}].{k}");
            let d = r.get_ref();
            let name = d.type_.get_ref();
            let mut ok = true;
            if !valid_detail_name(name) {
                self.issue(&d.type_, &key("type"), format!("{name:?} is not a valid type name"), NAME_FIX);
                ok = false;
            } else if !seen.insert(name.clone()) {
                self.issue(
                    &d.type_,
                    &key("type"),
                    format!("type {name:?} is declared twice"),
                    "keep one [[delegation.authorization_details]] block per type",
                );
                ok = false;
            }
            if d.fields.get_ref().is_empty() || d.fields.get_ref().len() > MAX_FIELDS {
                self.issue(
                    &d.fields,
                    &key("fields"),
                    format!("{} fields declared (1 to {MAX_FIELDS})", d.fields.get_ref().len()),
                    "declare the fields of the type, e.g. fields = { itinerary = \"String\", amount = \"Long\" }",
                );
                ok = false;
            }
            let mut fields = DetailFields::new();
            for (f, ty) in d.fields.get_ref() {
                if !valid_detail_name(f) {
                    self.issue(ty, &key(&format!("fields.{f}")), format!("{f:?} is not a valid field name"), NAME_FIX);
                    ok = false;
                    continue;
                }
                match FieldType::parse(ty.get_ref()) {
                    Some(t) => {
                        fields.insert(f.clone(), t);
                    }
                    None => {
                        let names: Vec<&str> = FieldType::ALL.iter().map(|t| t.name()).collect();
                        self.issue(
                            ty,
                            &key(&format!("fields.{f}")),
                            format!("{:?} is not a field type", ty.get_ref()),
                            &format!("write one of {}", names.join(", ")),
                        );
                        ok = false;
                    }
                }
            }
            if ok {
                types.insert(name.clone(), fields);
            }
        }
        DetailTypes::new(types)
    }

    /// Every type an entry lists in `[entries.delegation] authorization_details` must be declared.
    pub(super) fn entry_detail_types(&mut self, entries: &[Spanned<RawEntry>], declared: &[Spanned<RawDetailType>]) {
        for (i, e) in entries.iter().enumerate() {
            let Some(d) = &e.get_ref().delegation else { continue };
            for (j, t) in d.get_ref().authorization_details.iter().enumerate() {
                if !declared.iter().any(|x| x.get_ref().type_.get_ref() == t.get_ref()) {
                    let known: Vec<&str> = declared.iter().map(|x| x.get_ref().type_.get_ref().as_str()).collect();
                    self.issue(
                        t,
                        &format!("entries[{i}].delegation.authorization_details[{j}]"),
                        format!("{:?} is not a declared authorization_details type", t.get_ref()),
                        &if known.is_empty() {
                            format!(
                                "declare it: [[delegation.authorization_details]] type = \"{}\" with its fields",
                                t.get_ref()
                            )
                        } else {
                            format!(
                                "name one of {} or declare it in [[delegation.authorization_details]]",
                                known.join(", ")
                            )
                        },
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use crate::registry::delegation::FieldType;
    use std::path::Path;

    fn parse(text: &str) -> Result<Config, crate::config::ConfigError> {
        Config::parse(text, Path::new("/etc/tessera/tessera.toml"))
    }

    const HEAD: &str = r#"trust_domain = "example.org"
jwt_issuer = "https://tessera.example.org"
"#;

    #[test]
    fn declared_types_reach_the_delegation_config() {
        let cfg = parse(&format!(
            r#"{HEAD}[[delegation.authorization_details]]
type = "flight_booking"
fields = {{ itinerary = "String", amount = "Long", currency = "String", refundable = "Bool", tags = "Set<String>" }}
[[entries]]
spiffe_id = "spiffe://example.org/agents/travel"
selectors = ["unix:uid:1000"]
[entries.delegation]
from = ["spiffe://example.org/agents/concierge"]
scopes = ["booking:create"]
audiences = ["https://api.flights.example"]
authorization_details = ["flight_booking", "flight_booking"]
"#
        ))
        .unwrap();
        let d = cfg.delegation.unwrap();
        let fields = d.detail_types.get("flight_booking").unwrap();
        assert_eq!(fields["amount"], FieldType::Long);
        assert_eq!(fields["tags"], FieldType::SetOfString);
        assert_eq!(d.detail_types.iter().count(), 1);
        let e = cfg.registry.entries()[0].delegation.clone().unwrap();
        assert_eq!(e.authorization_details, ["flight_booking"]);
    }

    #[test]
    fn bad_declarations_and_unknown_types_are_located() {
        let err = parse(&format!(
            r#"{HEAD}[[delegation.authorization_details]]
type = "flight-booking"
fields = {{ amount = "Integer" }}
[[delegation.authorization_details]]
type = "hotel"
fields = {{}}
[[delegation.authorization_details]]
type = "hotel"
fields = {{ type = "String" }}
[[entries]]
spiffe_id = "spiffe://example.org/agents/travel"
selectors = ["unix:uid:1000"]
[entries.delegation]
from = ["spiffe://example.org/agents/concierge"]
scopes = ["booking:create"]
audiences = ["https://api.flights.example"]
authorization_details = ["car_rental"]
"#
        ))
        .unwrap_err();
        let found: Vec<(usize, &str)> = err.issues.iter().map(|i| (i.line, i.key.as_str())).collect();
        assert_eq!(
            found,
            [
                (4, "delegation.authorization_details[0].type"),
                (5, "delegation.authorization_details[0].fields.amount"),
                (8, "delegation.authorization_details[1].fields"),
                (10, "delegation.authorization_details[2].type"),
                (11, "delegation.authorization_details[2].fields.type"),
                (19, "entries[0].delegation.authorization_details[0]"),
            ]
        );
        let text = err.to_string();
        assert!(text.contains("write one of String, Long, Bool, Set<String>"), "{text}");
        assert!(text.contains("\"car_rental\" is not a declared authorization_details type"), "{text}");
    }
}
