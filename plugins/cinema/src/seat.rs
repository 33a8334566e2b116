//! A seat: a row name and a number from 1, whose resource id in the show's pool is
//! `<row>-<number>` (`A-7`) and whose data is `{"row": "A", "seat": 7}`. Row names are short
//! and alphanumeric, so the id splits back at its `-` without reading the data.
//!
//! Rows are ordered the way a hall numbers them, shorter names first: `A` … `Z`, `AA`, and
//! `1` … `9`, `10`; that is the order `buySeats` tries them in and `showSeats` lists them in.

use resman_sdk::pool::Resource;
use serde_json::json;
use std::cmp::Ordering;
use std::collections::BTreeMap;

/// The longest row name, in bytes.
pub(crate) const MAX_ROW_BYTES: usize = 8;

/// The most seats a row may have.
pub(crate) const MAX_SEATS_PER_ROW: u32 = 1000;

/// The resource id of seat `number` of `row`.
pub(crate) fn id(row: &str, number: u32) -> String {
    format!("{row}-{number}")
}

/// The row and number of the seat with resource id `id`, if it is a seat's id.
pub(crate) fn parse(id: &str) -> Option<(&str, u32)> {
    let (row, number) = id.split_once('-')?;
    if check_row(row).is_err() || !number.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    number
        .parse()
        .ok()
        .filter(|&number| number >= 1)
        .map(|number| (row, number))
}

/// The order rows are tried and listed in: shorter names first, then by name.
pub(crate) fn row_order(a: &str, b: &str) -> Ordering {
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

/// The order seats are listed in: by row, then by number.
pub(crate) fn seat_order(a: &(&str, u32), b: &(&str, u32)) -> Ordering {
    row_order(a.0, b.0).then(a.1.cmp(&b.1))
}

/// Whether `row` may name a row.
///
/// # Errors
///
/// A message saying what a row name must be.
pub(crate) fn check_row(row: &str) -> Result<(), String> {
    if !row.is_empty()
        && row.len() <= MAX_ROW_BYTES
        && row.bytes().all(|byte| byte.is_ascii_alphanumeric())
    {
        Ok(())
    } else {
        Err(format!(
            "row {row:?} must be 1 to {MAX_ROW_BYTES} ASCII letters or digits"
        ))
    }
}

/// The seat resources of `rows` (row name → number of seats): seats 1 to n of each row.
pub(crate) fn resources(rows: &BTreeMap<String, u32>) -> Vec<Resource> {
    rows.iter()
        .flat_map(|(row, &seats)| {
            (1..=seats).map(move |number| {
                Resource::new(id(row, number), json!({ "row": row, "seat": number }))
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_splits_back_into_row_and_number() {
        assert_eq!(id("A", 7), "A-7");
        assert_eq!(parse("A-7"), Some(("A", 7)));
        assert_eq!(parse("AA-12"), Some(("AA", 12)));
        assert_eq!(parse(&id("B2", 140)), Some(("B2", 140)));
    }

    #[test]
    fn ids_that_are_not_seats_do_not_parse() {
        for id in [
            "A7",
            "A-",
            "-7",
            "A-0",
            "A-x",
            "A-+7",
            "A-B-7",
            "A B-1",
            "A-99999999999",
        ] {
            assert_eq!(parse(id), None, "{id}");
        }
    }

    #[test]
    fn rows_are_ordered_shorter_names_first() {
        let mut rows = vec!["AA", "B", "A", "Z", "10", "9"];
        rows.sort_by(|a, b| row_order(a, b));
        assert_eq!(rows, ["9", "A", "B", "Z", "10", "AA"]);
    }

    #[test]
    fn seats_are_ordered_by_row_then_number() {
        let mut seats = vec![("B", 1), ("A", 10), ("A", 9)];
        seats.sort_by(seat_order);
        assert_eq!(seats, [("A", 9), ("A", 10), ("B", 1)]);
    }

    #[test]
    fn row_names_are_short_and_alphanumeric() {
        for row in ["A", "b", "12", "BALCONY1"] {
            assert!(check_row(row).is_ok(), "{row}");
        }
        for row in ["", "A-1", "A B", "BALCONY12", "Ä"] {
            let err = check_row(row).unwrap_err();
            assert!(
                err.contains("1 to 8 ASCII letters or digits"),
                "{row}: {err}"
            );
        }
    }

    #[test]
    fn resources_number_each_rows_seats_from_one() {
        let rows = BTreeMap::from([("A".to_owned(), 2), ("B".to_owned(), 1)]);
        let resources = resources(&rows);
        let ids: Vec<&str> = resources.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["A-1", "A-2", "B-1"]);
        assert_eq!(resources[1].data, json!({ "row": "A", "seat": 2 }));
    }
}
