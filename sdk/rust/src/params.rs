//! Parameters, checked against the plugin's declared specs before `init` sees them.

use crate::bindings::quiver::plugin::types::{
    InvalidParam, Param, ParamError, ParamKind, ParamSpec, ParamValue, WrongKind,
};

/// Kind of a parameter value.
pub(crate) fn kind_of(value: &ParamValue) -> ParamKind {
    match value {
        ParamValue::Boolean(_) => ParamKind::Boolean,
        ParamValue::Int(_) => ParamKind::Int,
        ParamValue::Float(_) => ParamKind::Float,
        ParamValue::Text(_) => ParamKind::Text,
        ParamValue::TextList(_) => ParamKind::TextList,
        ParamValue::TextMap(_) => ParamKind::TextMap,
    }
}

impl ParamSpec {
    fn of(name: &str, kind: ParamKind, doc: &str) -> Self {
        ParamSpec {
            name: name.into(),
            kind,
            required: false,
            default: None,
            doc: doc.into(),
        }
    }
    /// A boolean parameter.
    pub fn boolean(name: &str, doc: &str) -> Self {
        Self::of(name, ParamKind::Boolean, doc)
    }
    /// An integer parameter.
    pub fn int(name: &str, doc: &str) -> Self {
        Self::of(name, ParamKind::Int, doc)
    }
    /// A float parameter (integers are accepted too).
    pub fn float(name: &str, doc: &str) -> Self {
        Self::of(name, ParamKind::Float, doc)
    }
    /// A text parameter.
    pub fn text(name: &str, doc: &str) -> Self {
        Self::of(name, ParamKind::Text, doc)
    }
    /// A list-of-text parameter (a single text is accepted as a list of one).
    pub fn text_list(name: &str, doc: &str) -> Self {
        Self::of(name, ParamKind::TextList, doc)
    }
    /// A table of text values.
    pub fn text_map(name: &str, doc: &str) -> Self {
        Self::of(name, ParamKind::TextMap, doc)
    }
    /// Marks the parameter as required.
    pub fn required(mut self) -> Self {
        self.required = true;
        self
    }
    /// Sets the value used when the pipeline gives none.
    pub fn default(mut self, value: ParamValue) -> Self {
        self.default = Some(value);
        self
    }
}

/// Checked parameters: every name is declared, every value has its declared kind, required
/// ones are present and defaults are filled in.
#[derive(Debug, Clone, Default)]
pub struct Params {
    values: Vec<(String, ParamValue)>,
}

impl Params {
    /// Checks `given` against `specs`.
    pub fn check(specs: &[ParamSpec], given: Vec<Param>) -> Result<Params, ParamError> {
        let mut values = Vec::with_capacity(specs.len());
        for p in given {
            let Some(spec) = specs.iter().find(|s| s.name == p.name) else {
                return Err(ParamError::Unknown(p.name));
            };
            let value = match (spec.kind, p.value) {
                (ParamKind::Float, ParamValue::Int(i)) => ParamValue::Float(i as f64),
                (ParamKind::TextList, ParamValue::Text(t)) => ParamValue::TextList(vec![t]),
                (kind, value) if kind == kind_of(&value) => value,
                (kind, value) => {
                    return Err(ParamError::WrongKind(WrongKind {
                        name: p.name,
                        expected: kind,
                        found: kind_of(&value),
                    }))
                }
            };
            values.push((p.name, value));
        }
        for spec in specs {
            if values.iter().any(|(n, _)| *n == spec.name) {
                continue;
            }
            match &spec.default {
                Some(d) => values.push((spec.name.clone(), d.clone())),
                None if spec.required => return Err(ParamError::Missing(spec.name.clone())),
                None => {}
            }
        }
        Ok(Params { values })
    }

    /// The value of a parameter, if given or defaulted.
    pub fn get(&self, name: &str) -> Option<&ParamValue> {
        self.values.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }
    /// A text parameter.
    pub fn text(&self, name: &str) -> Option<&str> {
        match self.get(name)? {
            ParamValue::Text(t) => Some(t),
            _ => None,
        }
    }
    /// A float parameter.
    pub fn float(&self, name: &str) -> Option<f64> {
        match self.get(name)? {
            ParamValue::Float(f) => Some(*f),
            _ => None,
        }
    }
    /// An integer parameter.
    pub fn int(&self, name: &str) -> Option<i64> {
        match self.get(name)? {
            ParamValue::Int(i) => Some(*i),
            _ => None,
        }
    }
    /// A boolean parameter.
    pub fn boolean(&self, name: &str) -> Option<bool> {
        match self.get(name)? {
            ParamValue::Boolean(b) => Some(*b),
            _ => None,
        }
    }
    /// A list-of-text parameter (empty if absent).
    pub fn text_list(&self, name: &str) -> Vec<String> {
        match self.get(name) {
            Some(ParamValue::TextList(l)) => l.clone(),
            _ => Vec::new(),
        }
    }
    /// A table-of-text parameter (empty if absent).
    pub fn text_map(&self, name: &str) -> Vec<(String, String)> {
        match self.get(name) {
            Some(ParamValue::TextMap(m)) => m.clone(),
            _ => Vec::new(),
        }
    }

    /// A text parameter that must be one of `choices` (absent: the empty string, which is
    /// refused unless it is a choice).
    pub fn choice<'a>(&'a self, name: &str, choices: &[&str]) -> Result<&'a str, ParamError> {
        let value = self.text(name).unwrap_or_default();
        if choices.contains(&value) {
            Ok(value)
        } else {
            Err(Self::invalid(
                name,
                format!("`{value}` is not one of {}", choices.join(", ")),
            ))
        }
    }

    /// A list of column names (`columns`, usually): at least one, none twice.
    pub fn columns(&self, name: &str) -> Result<Vec<String>, ParamError> {
        let columns = self.text_list(name);
        if columns.is_empty() {
            return Err(Self::invalid(name, "name at least one column"));
        }
        for (i, c) in columns.iter().enumerate() {
            if columns[..i].contains(c) {
                return Err(Self::invalid(name, format!("column `{c}` is named twice")));
            }
        }
        Ok(columns)
    }

    /// The value paired with the text parameter's choice in `choices` (absent: the empty
    /// string, refused unless it is a choice); refused with the list of choices otherwise.
    pub fn one_of<T: Copy>(&self, name: &str, choices: &[(&str, T)]) -> Result<T, ParamError> {
        let value = self.text(name).unwrap_or_default();
        if let Some(&(_, v)) = choices.iter().find(|(c, _)| *c == value) {
            return Ok(v);
        }
        let quoted: Vec<String> = choices.iter().map(|(c, _)| format!("{c:?}")).collect();
        let listed = match quoted.split_last() {
            Some((last, [])) => last.clone(),
            Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
            None => "nothing".into(),
        };
        Err(Self::invalid(
            name,
            format!("must be {listed}, not {value:?}"),
        ))
    }

    /// An `invalid` parameter error.
    pub fn invalid(name: &str, reason: impl Into<String>) -> ParamError {
        ParamError::Invalid(InvalidParam {
            name: name.into(),
            reason: reason.into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_choice_is_one_of_the_given_values_or_a_named_error() {
        let specs = [ParamSpec::text("mode", "how")];
        let given = |v: &str| {
            vec![Param {
                name: "mode".into(),
                value: ParamValue::Text(v.into()),
            }]
        };
        let p = Params::check(&specs, given("fast")).unwrap();
        assert_eq!(p.choice("mode", &["slow", "fast"]), Ok("fast"));
        let p = Params::check(&specs, given("warp")).unwrap();
        match p.choice("mode", &["slow", "fast"]) {
            Err(ParamError::Invalid(i)) => {
                assert_eq!(i.name, "mode");
                assert_eq!(i.reason, "`warp` is not one of slow, fast");
            }
            other => panic!("{other:?}"),
        }
        let absent = Params::check(&specs, vec![]).unwrap();
        assert!(absent.choice("mode", &["slow"]).is_err());
    }

    fn invalid_reason(e: ParamError) -> String {
        match e {
            ParamError::Invalid(i) => format!("`{}`: {}", i.name, i.reason),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn one_of_gives_the_value_paired_with_the_choice_or_lists_them() {
        let specs = [ParamSpec::text("mode", "how")];
        let given = |v: &str| {
            let p = Param {
                name: "mode".into(),
                value: ParamValue::Text(v.into()),
            };
            Params::check(&specs, vec![p]).unwrap()
        };
        let choices = [("slow", 1), ("fast", 2), ("warp", 3)];
        assert_eq!(given("fast").one_of("mode", &choices), Ok(2));
        let err = given("drop").one_of("mode", &choices).unwrap_err();
        assert_eq!(
            invalid_reason(err),
            r#"`mode`: must be "slow", "fast" or "warp", not "drop""#
        );
        let err = given("x").one_of("mode", &choices[..1]).unwrap_err();
        assert_eq!(invalid_reason(err), r#"`mode`: must be "slow", not "x""#);
    }

    #[test]
    fn columns_are_at_least_one_and_none_twice() {
        let specs = [ParamSpec::text_list("columns", "which")];
        let given = |v: &[&str]| {
            let p = Param {
                name: "columns".into(),
                value: ParamValue::TextList(v.iter().map(|s| s.to_string()).collect()),
            };
            Params::check(&specs, vec![p]).unwrap()
        };
        assert_eq!(
            given(&["a", "b"]).columns("columns"),
            Ok(vec!["a".into(), "b".into()])
        );
        let err = given(&[]).columns("columns").unwrap_err();
        assert_eq!(invalid_reason(err), "`columns`: name at least one column");
        let err = given(&["a", "b", "a"]).columns("columns").unwrap_err();
        assert_eq!(invalid_reason(err), "`columns`: column `a` is named twice");
    }
}
