//! The real list of Japanese municipality codes (全国地方公共団体コード), shipped with
//! the crate so that a code can be checked for existence and named.

use std::collections::HashMap;
use std::sync::OnceLock;

use crate::ids::MunicipalityCode;

/// One entry of the municipality list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Municipality {
    /// The 6-digit code.
    pub code: MunicipalityCode,
    /// Prefecture name (都道府県名).
    pub prefecture: &'static str,
    /// Municipality name (団体名).
    pub name: &'static str,
    /// Reading of the name in hiragana.
    pub name_kana: &'static str,
}

const LIST_CSV: &str = include_str!("../data/municipalities.csv");

fn index() -> &'static HashMap<MunicipalityCode, Municipality> {
    static INDEX: OnceLock<HashMap<MunicipalityCode, Municipality>> = OnceLock::new();
    INDEX.get_or_init(|| {
        LIST_CSV
            .lines()
            .skip(1)
            .filter_map(|line| {
                let mut f = line.split(',');
                let code = MunicipalityCode::parse(f.next()?).ok()?;
                let prefecture = f.next()?;
                let name = f.next()?;
                let name_kana = f.next().unwrap_or("");
                Some((code, Municipality { code, prefecture, name, name_kana }))
            })
            .collect()
    })
}

/// Looks a code up in the shipped list.
pub fn lookup(code: MunicipalityCode) -> Option<&'static Municipality> {
    index().get(&code)
}

/// Every municipality in the shipped list, in code order.
pub fn all() -> Vec<&'static Municipality> {
    let mut v: Vec<_> = index().values().collect();
    v.sort_by_key(|m| m.code);
    v
}

/// The raw text of the shipped list (code,prefecture,name,name_kana), for tests and tools.
pub fn list_csv() -> &'static str {
    LIST_CSV
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_code_parses_and_is_known() {
        let lines = LIST_CSV.lines().skip(1).count();
        assert_eq!(lines, 1963);
        assert_eq!(all().len(), lines, "every line of the list must parse");
        let chiyoda = lookup(MunicipalityCode::parse("131016").unwrap()).unwrap();
        assert_eq!(chiyoda.name, "千代田区");
        assert_eq!(chiyoda.prefecture, "東京都");
    }
}
