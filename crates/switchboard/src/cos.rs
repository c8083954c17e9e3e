//! Classes of service: what an agent may dial (toll fraud). Checked after the dialplan decided
//! where a number goes and before anything is forwarded; a refusal is 403 plus a security log line.
//!
//! Categories follow the dialplan's decisions: `internal` (another agent's number), `hotline`
//! (12345 queues and the lines merged into it or dual lines: transfers), `subcenter` (sub-center
//! lines, which leave the switchboard on trunks). Emergency numbers are always allowed and never
//! reach this check (the emergency bridge answers them first). Anything else must match one of the
//! class's `outbound` patterns.

use std::collections::HashMap;

use crate::security::ClassConfig;

/// What a dialed number is, as far as the class of service cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Category {
    Internal,
    Hotline,
    Subcenter,
    /// Anything the plan does not know as one of the above.
    Other,
}

/// The built-in `default` class.
static BUILTIN: Class = Class {
    internal: true,
    hotline: true,
    subcenter: true,
    outbound: Vec::new(),
};

/// One compiled class.
#[derive(Debug, Clone)]
pub struct Class {
    internal: bool,
    hotline: bool,
    subcenter: bool,
    outbound: Vec<String>,
}

impl Class {
    /// Whether `dialed` (of `category`) is allowed.
    pub fn allows(&self, category: Category, dialed: &str) -> bool {
        match category {
            Category::Internal if self.internal => true,
            Category::Hotline if self.hotline => true,
            Category::Subcenter if self.subcenter => true,
            _ => self.outbound.iter().any(|p| matches(p, dialed)),
        }
    }
}

/// Classes by name, and each agent's class.
#[derive(Debug, Clone, Default)]
pub struct Classes {
    classes: HashMap<String, Class>,
    agents: HashMap<String, String>,
}

impl Classes {
    /// From the validated config.
    pub fn new(classes: &[ClassConfig], agents: &[crate::config::AgentConfig]) -> Classes {
        let mut m: HashMap<String, Class> = HashMap::new();
        // The built-in `default`: internal numbers, 12345 and its lines, sub-centers; nothing else.
        m.insert("default".into(), BUILTIN.clone());
        for c in classes {
            let has = |cat: &str| c.allow.iter().any(|a| a.get_ref() == cat);
            m.insert(
                c.name.get_ref().clone(),
                Class {
                    internal: has("internal"),
                    hotline: has("hotline"),
                    subcenter: has("subcenter"),
                    outbound: c.outbound.iter().map(|o| o.get_ref().clone()).collect(),
                },
            );
        }
        let agents = agents
            .iter()
            .map(|a| {
                (
                    a.user.get_ref().clone(),
                    a.class
                        .as_ref()
                        .map_or_else(|| "default".to_owned(), |c| c.get_ref().clone()),
                )
            })
            .collect();
        Classes { classes: m, agents }
    }

    /// The class of `user` and its name (`default` for an agent without one).
    pub fn of(&self, user: &str) -> (&str, &Class) {
        let name = self.agents.get(user).map_or("default", String::as_str);
        match self.classes.get(name) {
            Some(c) => (name, c),
            // Validation refuses unknown names; an empty class is the safe fallback.
            None => (name, &BUILTIN),
        }
    }
}

/// Whether `number` matches `pattern`: digits literally, `X` any digit, a trailing `*` any rest.
pub fn matches(pattern: &str, number: &str) -> bool {
    let (body, rest_ok) = match pattern.strip_suffix('*') {
        Some(b) => (b, true),
        None => (pattern, false),
    };
    let (p, n) = (body.as_bytes(), number.as_bytes());
    if n.len() < p.len() || (!rest_ok && n.len() != p.len()) {
        return false;
    }
    p.iter().zip(n).all(|(pc, nc)| match pc {
        b'X' => nc.is_ascii_digit(),
        c => c == nc,
    }) && n[p.len()..].iter().all(|c| c.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        assert!(matches("0971XXXXXXX", "09718223456"));
        assert!(!matches("0971XXXXXXX", "0971822345"));
        assert!(!matches("0971XXXXXXX", "097182234567"));
        assert!(matches("400*", "4008123456"));
        assert!(!matches("400*", "00861234"));
        assert!(!matches("400*", "400;x"));
    }

    #[test]
    fn builtin_default_refuses_everything_outside_the_switchboard() {
        let c = Classes::default();
        let d = c.of("8001").1;
        assert!(d.allows(Category::Hotline, "12345"));
        assert!(d.allows(Category::Internal, "8002"));
        assert!(!d.allows(Category::Other, "0088612345678"));
        assert_eq!(c.of("8001").0, "default");
    }
}
