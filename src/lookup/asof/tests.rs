use super::*;
use arrow::array::{Array, AsArray, StringArray};
use proptest::prelude::*;

/// Writes `batch` to `path` in row groups of `group` rows.
fn write_groups(path: &Path, batch: &RecordBatch, group: usize) {
    let props = parquet::file::properties::WriterProperties::builder()
        .set_max_row_group_row_count(Some(group))
        .build();
    let f = std::fs::File::create(path).unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(f, batch.schema(), Some(props)).unwrap();
    w.write(batch).unwrap();
    w.close().unwrap();
}

/// The join at any number of partitions, with ids of up to 8 bytes (held whole in a key
/// table slot) and longer ones in the same file, equals a brute-force scan: the greatest
/// (event, created, row) with `t - ttl < event <= t`.
#[test]
fn the_partitioned_join_equals_a_brute_force_scan() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let id = |k: u32| {
        if k.is_multiple_of(3) {
            format!("patient-{k:04}-with-a-long-id")
        } else {
            format!("p{k}")
        }
    };
    const DAY: i64 = 86_400_000_000;
    let (mut fid, mut ev, mut cr) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..900 {
        // The first 200 rows (two row groups) have short ids only.
        let k = if i < 200 {
            3 * rng.random_range(0..20) + 1
        } else {
            rng.random_range(0..60)
        };
        let e = rng.random_range(0..100) * DAY / 2;
        let c = e + rng.random_range(0..3) * DAY;
        for _ in 0..if rng.random_range(0..8) == 0 { 2 } else { 1 } {
            fid.push(id(k));
            ev.push(e);
            cr.push(c);
        }
    }
    let n_feat = fid.len();
    let feats = RecordBatch::try_from_iter([
        (
            "patient_id",
            Arc::new(StringArray::from(fid.clone())) as ArrayRef,
        ),
        (
            "event_timestamp",
            Arc::new(TimestampMicrosecondArray::from(ev.clone()).with_timezone("UTC")),
        ),
        (
            "created_timestamp",
            Arc::new(TimestampMicrosecondArray::from(cr.clone()).with_timezone("UTC")),
        ),
        (
            "n",
            Arc::new(Int64Array::from_iter_values(0..n_feat as i64)),
        ),
    ])
    .unwrap();
    let (mut eid, mut et) = (Vec::new(), Vec::new());
    for _ in 0..700 {
        let k = rng.random_range(0..66); // 60..66 have no feature rows
        let t = match rng.random_range(0..4) {
            0 => ev[rng.random_range(0..n_feat)],
            1 => ev[rng.random_range(0..n_feat)] + 10 * DAY,
            _ => rng.random_range(-5..60) * DAY,
        };
        eid.push(id(k));
        et.push(t);
    }
    let ents = RecordBatch::try_from_iter([
        (
            "patient_id",
            Arc::new(StringArray::from(eid.clone())) as ArrayRef,
        ),
        (
            "event_timestamp",
            Arc::new(TimestampMicrosecondArray::from(et.clone()).with_timezone("UTC")),
        ),
    ])
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (fp, ep) = (dir.path().join("f.parquet"), dir.path().join("e.parquet"));
    write_groups(&fp, &feats, 100);
    write_groups(&ep, &ents, 256);
    let mut matched = [0usize; 2];
    for ttl in [Some(10 * DAY), None] {
        for part_rows in [1, 3, 50, 4096] {
            let (out, stats) =
                asof_join_in(&fp, &ep, ttl, &AsofColumns::default(), part_rows, &Untimed).unwrap();
            assert_eq!(out.num_rows(), eid.len());
            // Buffered: the rows of patients with entity rows, from after their first
            // entity time less the TTL to their last entity time; some are dropped.
            let span = |p: &str| {
                let ts = (0..eid.len()).filter(|&r| eid[r] == p).map(|r| et[r]);
                Some((ts.clone().min()?, ts.max()?))
            };
            let known = (0..n_feat).filter(|&f| span(&fid[f]).is_some()).count();
            let can_win = (0..n_feat)
                .filter(|&f| {
                    span(&fid[f]).is_some_and(|(first, last)| {
                        ev[f] <= last && ttl.is_none_or(|ttl| ev[f] > first - ttl)
                    })
                })
                .count();
            assert_eq!(
                stats.buffered, can_win,
                "ttl {ttl:?}, part_rows {part_rows}"
            );
            assert!(can_win < known, "{can_win} of {known}: none dropped");
            let rows = out.column(0).as_primitive::<arrow::datatypes::Int64Type>();
            let n = out.column(3).as_primitive::<arrow::datatypes::Int64Type>();
            for k in 0..out.num_rows() {
                let r = rows.value(k) as usize;
                let t = et[r];
                let want = (0..n_feat)
                    .filter(|&f| {
                        fid[f] == eid[r] && ev[f] <= t && ttl.is_none_or(|ttl| ev[f] > t - ttl)
                    })
                    .max_by_key(|&f| (ev[f], cr[f], f));
                let got = n.is_valid(k).then(|| n.value(k) as usize);
                assert_eq!(
                    got, want,
                    "entity row {r}, ttl {ttl:?}, part_rows {part_rows}"
                );
                matched[usize::from(got.is_some())] += 1;
            }
        }
    }
    // Both outcomes occur, many times.
    assert!(matched[0] > 500 && matched[1] > 500, "{matched:?}");
}

#[test]
fn a_row_set_lists_and_ranks_its_members() {
    let members = [0u64, 3, 63, 64, 65, 127, 128, 200, 200, 1000, 1023];
    let set = RowSet::new(1024, members.iter().copied());
    let distinct: Vec<u64> = std::collections::BTreeSet::from(members)
        .into_iter()
        .collect();
    assert_eq!(set.members(0, 1024), distinct);
    assert_eq!(set.members(64, 129), vec![0, 1, 63, 64]);
    assert_eq!(set.members(4, 63), Vec::<u64>::new());
    assert_eq!(set.members(5, 5), Vec::<u64>::new());
    for (i, &m) in distinct.iter().enumerate() {
        assert_eq!(set.rank(m), i as u32, "rank of {m}");
    }
    assert_eq!(set.rank(1), 1);
    assert_eq!(set.rank(129), 7);
}

#[test]
fn a_mixed_phase_splits_in_proportion_and_adds_up() {
    assert_eq!(split_phase(2.0, 3.0, 1.0), (1.5, 0.5));
    assert_eq!(split_phase(2.0, 0.0, 0.0), (2.0, 0.0));
    let (load, join) = split_phase(1.7, 0.4, 2.2);
    assert!((load + join - 1.7).abs() < 1e-12 && join > load);
}

proptest! {
    /// The entity sort equals a plain sort by (id bytes, time, row): ids sharing their
    /// first 8 bytes, longer than 8 bytes, prefixes of one another (with a trailing NUL,
    /// which the zero-padded prefix cannot tell apart), empty; rows split over several
    /// arrays. Codes are ranks, and each patient's range holds its rows.
    #[test]
    fn sort_entities_equals_a_plain_sort(
        rows in proptest::collection::vec(
            ("|p1|p1\u{0}|p12|abcdefgh|abcdefgh\u{0}|abcdefghi|abcdefghj|[a-c]{0,10}", 0i64..4),
            0..200,
        ),
        cut in 0usize..200,
    ) {
        let ids: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
        let times: Vec<i64> = rows.iter().map(|r| r.1).collect();
        let cut = cut.min(ids.len());
        let parts = [
            StringArray::from(ids[..cut].to_vec()),
            StringArray::from(ids[cut..].to_vec()),
        ];
        let sorted = sort_entities(&parts, &times).unwrap();
        let mut want: Vec<usize> = (0..ids.len()).collect();
        want.sort_by(|&a, &b| (ids[a].as_bytes(), times[a], a).cmp(&(ids[b].as_bytes(), times[b], b)));
        let got: Vec<usize> = sorted.row_of.iter().map(|&r| r as usize).collect();
        prop_assert_eq!(&got, &want);
        let want_times: Vec<i64> = want.iter().map(|&r| times[r]).collect();
        prop_assert_eq!(&sorted.times, &want_times);
        let mut distinct: Vec<&str> = ids.clone();
        distinct.sort_unstable();
        distinct.dedup();
        prop_assert_eq!(sorted.table.len(), distinct.len());
        prop_assert_eq!(sorted.starts.len(), distinct.len() + 1);
        for (c, id) in distinct.iter().enumerate() {
            prop_assert_eq!(sorted.table.get(id), Some(c as u32));
            prop_assert_eq!(sorted.table.key(c as u32), *id);
            for k in sorted.starts[c]..sorted.starts[c + 1] {
                prop_assert_eq!(ids[sorted.row_of[k as usize] as usize], *id);
            }
        }
    }
}
