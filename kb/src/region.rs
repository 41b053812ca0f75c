//! The province's administrative regions: 21 cities and prefectures (市、州)
//! and their 183 counties (县、区、市), for reading where a listing or a
//! user is ("苍溪" is in 广元市) and for reports by region.
//!
//! The table ships in the binary from `kb/dict/regions.tsv`; each name has
//! hand-listed short forms, because stripping 县/区 blindly turns counties
//! into everyday words (南部县 → 南部, 石棉县 → 石棉).

use std::collections::HashMap;
use std::sync::LazyLock;

use aho_corasick::{AhoCorasick, MatchKind};

/// The shipped region table.
pub const BUILTIN_REGIONS: &str = include_str!("../dict/regions.tsv");

/// Where a text says something is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    /// The city or prefecture, full name ("广元市").
    pub city: String,
    /// The county, full name ("苍溪县"), when one was named.
    pub county: Option<String>,
}

#[derive(Debug, Clone)]
enum Named {
    City(usize),
    /// A county name, with every city that has a county of that name
    /// (市中区 is in both 内江 and 乐山).
    County(Vec<(usize, String)>),
}

/// The region table and a matcher over every name and short form.
#[derive(Debug)]
pub struct Regions {
    cities: Vec<String>,
    counties: Vec<Vec<String>>,
    matcher: AhoCorasick,
    named: Vec<Named>,
}

static BUILTIN: LazyLock<Regions> = LazyLock::new(|| Regions::parse(BUILTIN_REGIONS));

impl Regions {
    /// The shipped table.
    pub fn builtin() -> &'static Regions {
        &BUILTIN
    }

    /// Parses the table format of `kb/dict/regions.tsv`; malformed lines are
    /// skipped (the shipped table is checked by a test).
    pub fn parse(text: &str) -> Self {
        let mut cities = Vec::new();
        let mut counties = Vec::new();
        let mut names: HashMap<String, Named> = HashMap::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((city_forms, county_list)) = line.split_once('\t') else {
                continue;
            };
            let city_index = cities.len();
            let mut forms = city_forms.split('|').map(str::trim);
            let Some(city) = forms.next().filter(|c| !c.is_empty()) else {
                continue;
            };
            cities.push(city.to_owned());
            for form in std::iter::once(city).chain(forms) {
                names.insert(form.to_owned(), Named::City(city_index));
            }
            let mut these = Vec::new();
            for county in county_list.split(',') {
                let mut forms = county.split('|').map(str::trim);
                let Some(full) = forms.next().filter(|c| !c.is_empty()) else {
                    continue;
                };
                these.push(full.to_owned());
                for form in std::iter::once(full).chain(forms) {
                    match names.get_mut(form) {
                        // A city's own name wins over a county of the same
                        // short name (广安区 → 广安 is the city).
                        Some(Named::City(_)) => {}
                        Some(Named::County(owners)) => owners.push((city_index, full.to_owned())),
                        None => {
                            names.insert(
                                form.to_owned(),
                                Named::County(vec![(city_index, full.to_owned())]),
                            );
                        }
                    }
                }
            }
            counties.push(these);
        }
        let (patterns, named): (Vec<String>, Vec<Named>) = names.into_iter().unzip();
        let matcher = AhoCorasick::builder()
            .match_kind(MatchKind::Standard)
            .build(&patterns)
            .expect("region names form a valid automaton");
        Self {
            cities,
            counties,
            matcher,
            named,
        }
    }

    /// The full names of every city and prefecture.
    pub fn cities(&self) -> &[String] {
        &self.cities
    }

    /// How many counties the table has.
    pub fn county_count(&self) -> usize {
        self.counties.iter().map(Vec::len).sum()
    }

    /// The full city name for a full or short city name ("成都" → "成都市").
    pub fn city(&self, name: &str) -> Option<String> {
        self.find(name).map(|place| place.city)
    }

    /// Where the text says something is: the first county named (placed in
    /// a city the text also names, when its name is shared), else the first
    /// city named. `None` when the text names no place in the province
    /// ("四川" alone is not precise enough).
    pub fn find(&self, text: &str) -> Option<Place> {
        let mut cities_named = Vec::new();
        let mut counties_named = Vec::new();
        // Overlapping matches: in 内江市中区 both 内江市 and 市中区 count.
        for found in self.matcher.find_overlapping_iter(text) {
            match &self.named[found.pattern().as_usize()] {
                Named::City(city) => cities_named.push(*city),
                Named::County(owners) => counties_named.push(owners),
            }
        }
        for owners in &counties_named {
            let placed = match owners.as_slice() {
                [only] => Some(only),
                several => several.iter().find(|(city, _)| cities_named.contains(city)),
            };
            if let Some((city, county)) = placed {
                return Some(Place {
                    city: self.cities[*city].clone(),
                    county: Some(county.clone()),
                });
            }
        }
        cities_named.first().map(|city| Place {
            city: self.cities[*city].clone(),
            county: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_table_has_every_city_and_county() {
        let regions = Regions::builtin();
        assert_eq!(regions.cities().len(), 21);
        assert_eq!(regions.county_count(), 183);
    }

    #[test]
    fn places_are_read_from_county_and_city_names() {
        let regions = Regions::builtin();
        let cases = [
            ("苍溪", Some(("广元市", Some("苍溪县")))),
            ("眉山东坡区", Some(("眉山市", Some("东坡区")))),
            ("内江市中区", Some(("内江市", Some("市中区")))),
            ("乐山市中区", Some(("乐山市", Some("市中区")))),
            ("凉山西昌", Some(("凉山彝族自治州", Some("西昌市")))),
            ("阿坝汶川", Some(("阿坝藏族羌族自治州", Some("汶川县")))),
            ("峨眉山", Some(("乐山市", Some("峨眉山市")))),
            ("成都高新区", Some(("成都市", None))),
            ("我们在绵阳", Some(("绵阳市", None))),
            ("郫县", Some(("成都市", Some("郫都区")))),
            ("广安", Some(("广安市", None))),
            ("四川", None),
            ("市中区", None),
            ("我们在南部地区", None),
        ];
        for (text, expected) in cases {
            let found = regions.find(text);
            let found = found
                .as_ref()
                .map(|p| (p.city.as_str(), p.county.as_deref()));
            assert_eq!(found, expected, "{text}");
        }
        assert_eq!(regions.city("成都").as_deref(), Some("成都市"));
    }
}
