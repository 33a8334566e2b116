//! A show's seating at one moment, read from its pool's status: per row, which seats are
//! free and which are sold (held by a ticket). `buySeats` finds its adjacent seats here
//! before it asks the pool for exactly those; `showSeats` answers with it.
//!
//! Resources of the pool whose ids are not seat ids are left out, so a stray resource never
//! breaks a show.

use crate::seat;
use resman_sdk::pool::PoolStatus;
use resman_sdk::JobError;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// The free and sold seats of one row, each ascending.
#[derive(Debug, Default, PartialEq, Eq)]
struct Row {
    name: String,
    free: Vec<u32>,
    sold: Vec<u32>,
}

impl Row {
    /// The first `count` adjacent free seats.
    fn adjacent(&self, count: usize) -> Option<&[u32]> {
        first_run(&self.free, count)
    }

    /// The first `count` adjacent seats, free or sold.
    fn block(&self, count: usize) -> Option<Vec<u32>> {
        let mut all: Vec<u32> = self.free.iter().chain(&self.sold).copied().collect();
        all.sort_unstable();
        first_run(&all, count).map(<[u32]>::to_vec)
    }

    fn ids(&self, numbers: &[u32]) -> Vec<String> {
        numbers
            .iter()
            .map(|&number| seat::id(&self.name, number))
            .collect()
    }
}

/// The rows of a show, in hall order.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Seating {
    show: String,
    rows: Vec<Row>,
}

impl Seating {
    /// The seating of `show` from its pool's `status`.
    pub(crate) fn of(show: &str, status: &PoolStatus) -> Seating {
        let mut rows: BTreeMap<&str, Row> = BTreeMap::new();
        let free = status.free.iter().map(|free| (free.id.as_str(), true));
        let sold = status.held.iter().map(|held| (held.id.as_str(), false));
        for (id, is_free) in free.chain(sold) {
            let Some((name, number)) = seat::parse(id) else {
                continue;
            };
            let row = rows.entry(name).or_insert_with(|| Row {
                name: name.to_owned(),
                ..Row::default()
            });
            if is_free {
                &mut row.free
            } else {
                &mut row.sold
            }
            .push(number);
        }
        let mut rows: Vec<Row> = rows.into_values().collect();
        rows.sort_by(|a, b| seat::row_order(&a.name, &b.name));
        for row in &mut rows {
            row.free.sort_unstable();
            row.sold.sort_unstable();
        }
        Seating {
            show: show.to_owned(),
            rows,
        }
    }

    /// The ids of the first `count` adjacent free seats of `row`, or of the first row that
    /// has them.
    ///
    /// # Errors
    ///
    /// `not_found` when the show has no row `row`; `unavailable` when no row tried has
    /// `count` adjacent free seats.
    pub(crate) fn adjacent(&self, count: u32, row: Option<&str>) -> Result<Vec<String>, JobError> {
        let count = count as usize;
        let found = self
            .rows_to_try(row)?
            .iter()
            .find_map(|row| row.adjacent(count).map(|run| row.ids(run)));
        found.ok_or_else(|| {
            let place = match row {
                Some(row) => format!("row {row}"),
                None => "any row".to_owned(),
            };
            JobError::reject(
                "unavailable",
                format!(
                    "no {count} adjacent free seats in {place} of show {}",
                    self.show
                ),
            )
        })
    }

    /// The ids of the first `count` adjacent seats, free or sold, of `row` or of the first
    /// row that has them: for repeating a `buySeats` whose seats are sold, to any acquire that
    /// names its request id. Such seats are never all free when [`adjacent`] found none, so
    /// the pool grants them only as the lease that request id already holds.
    ///
    /// [`adjacent`]: Seating::adjacent
    pub(crate) fn any_block(&self, count: u32, row: Option<&str>) -> Option<Vec<String>> {
        self.rows_to_try(row)
            .ok()?
            .iter()
            .find_map(|row| row.block(count as usize).map(|numbers| row.ids(&numbers)))
    }

    /// The `showSeats` answer: per row its free and sold seat numbers, and the totals.
    pub(crate) fn answer(&self) -> Value {
        let rows: Vec<Value> = self
            .rows
            .iter()
            .map(|row| json!({ "row": row.name, "free": row.free, "sold": row.sold }))
            .collect();
        let free: usize = self.rows.iter().map(|row| row.free.len()).sum();
        let sold: usize = self.rows.iter().map(|row| row.sold.len()).sum();
        json!({ "show": self.show, "rows": rows, "free": free, "sold": sold })
    }

    fn rows_to_try(&self, row: Option<&str>) -> Result<&[Row], JobError> {
        let Some(name) = row else {
            return Ok(&self.rows);
        };
        match self.rows.iter().position(|row| row.name == name) {
            Some(index) => Ok(&self.rows[index..=index]),
            None => Err(JobError::reject(
                "not_found",
                format!("show {} has no row {name}", self.show),
            )),
        }
    }
}

/// The first `count` consecutive numbers of ascending `numbers`.
fn first_run(numbers: &[u32], count: usize) -> Option<&[u32]> {
    if count == 0 {
        return None;
    }
    numbers
        .windows(count)
        .find(|run| run[count - 1] - run[0] == count as u32 - 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use resman_sdk::pool::{Held, Resource};

    /// A show's status from `rows`: each row a string, `.` a free seat, `x` a sold one.
    fn status(rows: &[(&str, &str)]) -> PoolStatus {
        let mut free = Vec::new();
        let mut held = Vec::new();
        for (row, seats) in rows {
            for (index, state) in seats.chars().enumerate() {
                let id = seat::id(row, index as u32 + 1);
                match state {
                    '.' => free.push(Resource::new(id, json!({}))),
                    _ => held.push(Held {
                        id,
                        data: json!({}),
                        lease: "T1".into(),
                        token: 1,
                        holder: 1,
                        expires_at_ms: None,
                    }),
                }
            }
        }
        PoolStatus {
            pool: "show:s".into(),
            free,
            held,
            waiting: 0,
        }
    }

    fn seating(rows: &[(&str, &str)]) -> Seating {
        Seating::of("s", &status(rows))
    }

    fn code(err: JobError) -> String {
        match err {
            JobError::Reject { code, .. } => code,
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    #[test]
    fn the_first_adjacent_free_seats_are_found() {
        let seating = seating(&[("A", ".x..x...")]);
        assert_eq!(seating.adjacent(1, None).unwrap(), ["A-1"]);
        assert_eq!(seating.adjacent(2, None).unwrap(), ["A-3", "A-4"]);
        assert_eq!(seating.adjacent(3, None).unwrap(), ["A-6", "A-7", "A-8"]);
    }

    #[test]
    fn free_seats_that_are_not_adjacent_do_not_count() {
        let seating = seating(&[("A", ".x.x.x.")]);
        let err = seating.adjacent(2, None).unwrap_err();
        assert!(err
            .reason()
            .contains("no 2 adjacent free seats in any row of show s"));
        assert_eq!(code(err), "unavailable");
    }

    #[test]
    fn rows_are_tried_in_hall_order() {
        let seating = seating(&[("AA", "...."), ("B", "x..."), ("A", "xx..")]);
        assert_eq!(seating.adjacent(2, None).unwrap(), ["A-3", "A-4"]);
        assert_eq!(seating.adjacent(3, None).unwrap(), ["B-2", "B-3", "B-4"]);
        assert_eq!(
            seating.adjacent(4, None).unwrap(),
            ["AA-1", "AA-2", "AA-3", "AA-4"]
        );
    }

    #[test]
    fn a_named_row_is_the_only_one_tried() {
        let seating = seating(&[("A", "...."), ("B", "x.x.")]);
        assert_eq!(seating.adjacent(1, Some("B")).unwrap(), ["B-2"]);
        let err = seating.adjacent(2, Some("B")).unwrap_err();
        assert!(err.reason().contains("in row B of show s"), "{err}");
        assert_eq!(code(err), "unavailable");
    }

    #[test]
    fn an_unknown_row_is_not_found() {
        let err = seating(&[("A", "..")]).adjacent(1, Some("Q")).unwrap_err();
        assert!(err.reason().contains("show s has no row Q"), "{err}");
        assert_eq!(code(err), "not_found");
    }

    #[test]
    fn a_block_longer_than_any_row_is_unavailable() {
        let err = seating(&[("A", "..")]).adjacent(3, None).unwrap_err();
        assert_eq!(code(err), "unavailable");
    }

    #[test]
    fn a_gap_in_the_numbering_breaks_adjacency() {
        let mut status = status(&[("A", "....")]);
        status.free.remove(1);
        status.free.push(Resource::new("A-6", json!({})));
        let seating = Seating::of("s", &status);
        assert_eq!(seating.adjacent(2, None).unwrap(), ["A-3", "A-4"]);
    }

    #[test]
    fn resources_that_are_not_seats_are_left_out() {
        let mut status = status(&[("A", ".x")]);
        status.free.push(Resource::new("popcorn", json!({})));
        let seating = Seating::of("s", &status);
        assert_eq!(seating, Seating::of("s", &self::status(&[("A", ".x")])));
    }

    #[test]
    fn any_block_skips_gaps_in_the_numbering() {
        let mut status = status(&[("A", "x.x.")]);
        status.free.retain(|free| free.id != "A-2");
        let seating = Seating::of("s", &status);
        assert_eq!(seating.any_block(2, None).unwrap(), ["A-3", "A-4"]);
    }

    #[test]
    fn any_block_names_a_rows_first_seats_sold_or_not() {
        let seating = seating(&[("A", "x"), ("B", "x.x")]);
        assert_eq!(seating.any_block(2, None).unwrap(), ["B-1", "B-2"]);
        assert_eq!(seating.any_block(1, Some("A")).unwrap(), ["A-1"]);
        assert_eq!(seating.any_block(4, None), None);
        assert_eq!(seating.any_block(1, Some("Q")), None);
    }

    #[test]
    fn the_answer_lists_each_rows_free_and_sold_seats() {
        let seating = seating(&[("B", "x."), ("A", ".x.")]);
        assert_eq!(
            seating.answer(),
            json!({
                "show": "s",
                "rows": [
                    { "row": "A", "free": [1, 3], "sold": [2] },
                    { "row": "B", "free": [2], "sold": [1] },
                ],
                "free": 3,
                "sold": 2,
            })
        );
    }
}
