//! Derived tables: SQL (DataFusion) over the curated tables, the "transform later" of ELT.
//!
//! A derived table is one `SELECT` over curated tables registered as in-memory tables. Its
//! schema is known at load time (the query is planned against the curated schemas, no data
//! needed), so features over it are validated like features over curated tables. At
//! materialization the query runs on one partition and its result is sorted by every column,
//! so the rows a feature sees never depend on DataFusion's scheduling.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use arrow::array::{new_null_array, RecordBatch};
use arrow::compute::{concat_batches, take_record_batch};
use arrow::datatypes::{Field, Schema, SchemaRef};
use arrow::row::{RowConverter, SortField};
use datafusion::config::Dialect;
use datafusion::datasource::MemTable;
use datafusion::execution::context::{SQLOptions, SessionConfig, SessionContext};
use datafusion::logical_expr::LogicalPlan;
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::Statement as SqlStatement;

use super::filter::Condition;
use crate::curated::Table;
use crate::error::{Error, Result};

/// A session that plans and runs derived queries: one partition, so plans are simple and
/// results come back in one piece.
fn session() -> SessionContext {
    SessionContext::new_with_config(SessionConfig::new().with_target_partitions(1))
}

/// A parsed derived query: its canonical text and the curated tables it reads.
#[derive(Debug, Clone)]
pub(crate) struct ParsedQuery {
    /// The statement as the SQL parser prints it back: whitespace, comments and keyword case
    /// of the source do not change it, so it is what the definition hash covers.
    pub(crate) canonical: String,
    /// The curated tables the query names, sorted.
    pub(crate) tables: Vec<Table>,
    /// The parsed statement (what `canonical` prints).
    statement: DfStatement,
}

/// Parses `sql`: one `SELECT` statement over curated tables.
///
/// # Errors
/// A message naming what is wrong (not SQL, several statements, not a query, an unknown
/// table).
pub(crate) fn parse(sql: &str) -> std::result::Result<ParsedQuery, String> {
    let ctx = session();
    let state = ctx.state();
    let statement = state
        .sql_to_statement(sql, &Dialect::Generic)
        .map_err(|e| format!("SQL does not parse: {e}"))?;
    match &statement {
        DfStatement::Statement(s) if matches!(**s, SqlStatement::Query(_)) => {}
        _ => return Err("a derived table is one SELECT query".into()),
    }
    let refs = state
        .resolve_table_references(&statement)
        .map_err(|e| format!("SQL: {e}"))?;
    let mut tables = Vec::new();
    for r in refs {
        let name = r.table();
        let t = Table::from_name(name).ok_or_else(|| {
            format!(
                "SQL reads unknown table {name:?} (derived tables read curated tables: {})",
                Table::ALL.map(Table::name).join(", ")
            )
        })?;
        if !tables.contains(&t) {
            tables.push(t);
        }
    }
    tables.sort();
    Ok(ParsedQuery {
        canonical: statement.to_string(),
        tables,
        statement,
    })
}

/// For a query that reads one curated table once (no join, subquery, CTE or set operation),
/// the table and the conditions of its `WHERE` that a text column equals a string
/// (`col = 'x'`, `'x' = col`) or is one of some (`col IN ('x', 'y')`), among the conjuncts
/// joined by `AND` at its top. Rows failing any of them never reach the result (the `WHERE`
/// applies before grouping, windows and limits), so materialization need not read them.
/// Other conjuncts are left out (the rows kept are then a superset); `None` when the query
/// does not have this shape.
pub(crate) fn where_conditions(
    query: &ParsedQuery,
) -> Option<(Table, BTreeMap<String, Condition>)> {
    use datafusion::sql::sqlparser::ast::{BinaryOperator, Expr, SetExpr, TableFactor, Value};
    let [table] = query.tables[..] else {
        return None;
    };
    // One SELECT in the whole text: no subquery anywhere, which could read the table again.
    let selects = query
        .canonical
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.eq_ignore_ascii_case("select"))
        .count();
    if selects != 1 {
        return None;
    }
    let DfStatement::Statement(s) = query.statement.clone() else {
        return None;
    };
    let SqlStatement::Query(q) = *s else {
        return None;
    };
    let SetExpr::Select(select) = *q.body else {
        return None;
    };
    if q.with.is_some()
        || select.from.len() != 1
        || !select.from[0].joins.is_empty()
        || !matches!(select.from[0].relation, TableFactor::Table { .. })
    {
        return None;
    }
    let schema = table.schema();
    // A column of the table's text columns, named as DataFusion resolves it (unquoted names
    // folded to lower case).
    let column = |e: &Expr| -> Option<String> {
        let ident = match e {
            Expr::Identifier(i) => i,
            Expr::CompoundIdentifier(parts) => parts.last()?,
            _ => return None,
        };
        let name = match ident.quote_style {
            None => ident.value.to_lowercase(),
            Some(_) => ident.value.clone(),
        };
        schema
            .field_with_name(&name)
            .is_ok_and(|f| f.data_type() == &arrow::datatypes::DataType::Utf8)
            .then_some(name)
    };
    let text = |e: &Expr| -> Option<String> {
        match e {
            Expr::Value(v) => match &v.value {
                Value::SingleQuotedString(x) => Some(x.clone()),
                _ => None,
            },
            _ => None,
        }
    };
    let mut conjuncts: Vec<Expr> = select.selection.into_iter().collect();
    let mut out = BTreeMap::new();
    while let Some(e) = conjuncts.pop() {
        match e {
            Expr::Nested(inner) => conjuncts.push(*inner),
            Expr::BinaryOp {
                left,
                op: BinaryOperator::And,
                right,
            } => {
                conjuncts.push(*left);
                conjuncts.push(*right);
            }
            Expr::BinaryOp {
                left,
                op: BinaryOperator::Eq,
                right,
            } => {
                let found = column(&left)
                    .zip(text(&right))
                    .or_else(|| column(&right).zip(text(&left)));
                if let Some((c, v)) = found {
                    out.entry(c).or_insert(Condition::Eq(v));
                }
            }
            Expr::InList {
                expr,
                list,
                negated: false,
            } => {
                let values: Option<Vec<String>> = list.iter().map(text).collect();
                if let Some((c, vs)) = column(&expr).zip(values) {
                    out.entry(c).or_insert(Condition::In(vs));
                }
            }
            _ => {}
        }
    }
    Some((table, out))
}

/// How a derived query reads the `source_id` column of its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SourceIdUse {
    /// Not at all: the text never names it and selects no `*`.
    None,
    /// Passed through: a plain `SELECT ... FROM table WHERE ...` (one table, no join,
    /// subquery, grouping, `DISTINCT`, ordering or limit) whose only mention of it is a
    /// select item `source_id` (or a `*`). Each result row is then one input row with that
    /// row's `source_id`, and which rows there are does not depend on its values: the query
    /// can run on row numbers in its place and the ids be looked up afterwards.
    Through,
    /// Any other use (a condition, an expression, an alias, a grouping...).
    Other,
}

/// How `query` reads `source_id` ([`SourceIdUse`]).
pub(crate) fn source_id_use(query: &ParsedQuery) -> SourceIdUse {
    use datafusion::sql::sqlparser::ast::{Expr, GroupByExpr, SelectItem, SetExpr, TableFactor};
    let words: Vec<String> = query
        .canonical
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .map(str::to_ascii_lowercase)
        .collect();
    let mentions = words.iter().filter(|w| *w == "source_id").count();
    let selects = words.iter().filter(|w| *w == "select").count();
    let DfStatement::Statement(s) = &query.statement else {
        return SourceIdUse::Other;
    };
    let SqlStatement::Query(q) = &**s else {
        return SourceIdUse::Other;
    };
    let SetExpr::Select(select) = &*q.body else {
        return SourceIdUse::Other;
    };
    let star = select.projection.iter().any(|i| {
        matches!(
            i,
            SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..)
        )
    });
    if mentions == 0 && !star {
        return SourceIdUse::None;
    }
    let is_sid = |e: &Expr| {
        let ident = match e {
            Expr::Identifier(i) => i,
            Expr::CompoundIdentifier(parts) => match parts.last() {
                Some(i) => i,
                None => return false,
            },
            _ => return false,
        };
        match ident.quote_style {
            None => ident.value.eq_ignore_ascii_case("source_id"),
            Some(_) => ident.value == "source_id",
        }
    };
    let item = select.projection.iter().any(|i| match i {
        SelectItem::UnnamedExpr(e) => is_sid(e),
        _ => false,
    });
    let plain_groups =
        matches!(&select.group_by, GroupByExpr::Expressions(e, m) if e.is_empty() && m.is_empty());
    let plain = query.tables.len() == 1
        && selects == 1
        && q.with.is_none()
        && q.order_by.is_none()
        && q.limit_clause.is_none()
        && q.fetch.is_none()
        && q.pipe_operators.is_empty()
        && select.distinct.is_none()
        && select.top.is_none()
        && select.exclude.is_none()
        && select.into.is_none()
        && select.from.len() == 1
        && select.from[0].joins.is_empty()
        && matches!(select.from[0].relation, TableFactor::Table { .. })
        && select.lateral_views.is_empty()
        && select.connect_by.is_empty()
        && plain_groups
        && select.having.is_none()
        && select.qualify.is_none()
        && select.cluster_by.is_empty()
        && select.distribute_by.is_empty()
        && select.sort_by.is_empty();
    // The one mention is the select item (or there is none, and a `*` selects it).
    let through = match mentions {
        0 => star,
        1 => item,
        _ => false,
    };
    match plain && through {
        true => SourceIdUse::Through,
        false => SourceIdUse::Other,
    }
}

/// Registers the given tables (empty ones when `batches` has none) in a fresh session.
fn register(ctx: &SessionContext, tables: &BTreeMap<Table, Vec<RecordBatch>>) -> Result<()> {
    for (t, batches) in tables {
        let schema = batches
            .first()
            .map(|b| b.schema())
            .unwrap_or_else(|| t.schema());
        let mem = MemTable::try_new(schema, vec![batches.clone()])
            .map_err(|e| Error::invalid(format!("derived input {}", t.name()), e.to_string()))?;
        ctx.register_table(t.name(), Arc::new(mem))
            .map_err(|e| Error::invalid(format!("derived input {}", t.name()), e.to_string()))?;
    }
    Ok(())
}

/// The logical plan of `query` against empty curated tables, and the session state that made
/// it.
///
/// # Errors
/// A message when the query does not plan (unknown column, type error).
fn plan(
    query: &ParsedQuery,
) -> std::result::Result<(datafusion::execution::SessionState, LogicalPlan), String> {
    let ctx = session();
    let empty: BTreeMap<Table, Vec<RecordBatch>> =
        query.tables.iter().map(|t| (*t, Vec::new())).collect();
    register(&ctx, &empty).map_err(|e| e.to_string())?;
    let state = ctx.state();
    let statement = state
        .sql_to_statement(&query.canonical, &Dialect::Generic)
        .map_err(|e| format!("SQL does not parse: {e}"))?;
    // Planning only looks up in-memory tables; nothing here waits on I/O, so blocking on it
    // is safe inside or outside a runtime.
    let plan = futures::executor::block_on(state.statement_to_plan(statement))
        .map_err(|e| format!("SQL does not plan: {e}"))?;
    Ok((state, plan))
}

/// Whether `query`'s rows of a patient depend on that patient's input rows only, so that it
/// can run over the rows of some patients and give exactly their rows of a run over all:
/// its plan (subqueries included) reads one table once and holds only projections, filters,
/// sorts without a limit and aliases (no aggregate, window, join, limit, distinct or union),
/// and every projection passes `patient_id` through unchanged. `false` when it does not
/// plan.
pub(crate) fn patient_local(query: &ParsedQuery) -> bool {
    use datafusion::common::tree_node::TreeNodeRecursion;
    use datafusion::logical_expr::Expr;
    let Ok((_, plan)) = plan(query) else {
        return false;
    };
    let passes_patient = |e: &Expr| match e {
        Expr::Column(c) => c.name == "patient_id",
        Expr::Alias(a) => matches!(&*a.expr, Expr::Column(c) if c.name == "patient_id"),
        _ => false,
    };
    let (mut ok, mut scans) = (true, 0usize);
    let walked = plan.apply_with_subqueries(|node| {
        match node {
            LogicalPlan::TableScan(_) => scans += 1,
            LogicalPlan::Filter(_) | LogicalPlan::SubqueryAlias(_) => {}
            LogicalPlan::Sort(s) if s.fetch.is_none() => {}
            LogicalPlan::Projection(p) => {
                let by_name = p
                    .schema
                    .fields()
                    .iter()
                    .zip(&p.expr)
                    .find(|(f, _)| f.name() == "patient_id");
                if !by_name.is_some_and(|(_, e)| passes_patient(e)) {
                    ok = false;
                }
            }
            _ => ok = false,
        }
        Ok(if ok {
            TreeNodeRecursion::Continue
        } else {
            TreeNodeRecursion::Stop
        })
    });
    walked.is_ok() && ok && scans == 1
}

/// The output schema of `sql` (planned against empty curated tables).
///
/// # Errors
/// A message when the query does not plan (unknown column, type error).
pub(crate) fn plan_schema(query: &ParsedQuery) -> std::result::Result<SchemaRef, String> {
    let (_, plan) = plan(query)?;
    Ok(Arc::new(plan.schema().as_arrow().clone()))
}

/// `query` cut down to the result columns `columns` (those of its result, in result order;
/// the query itself when that is all of them or none): `SELECT "a", "b" FROM (query)`. DataFusion then
/// reads only the input columns these need ([`input_columns`]), so materialization neither
/// reads nor computes the columns of a derived table no feature reads.
///
/// # Errors
/// A message when the query does not plan.
pub(crate) fn narrowed(
    query: &ParsedQuery,
    columns: &BTreeSet<String>,
) -> std::result::Result<ParsedQuery, String> {
    let schema = plan_schema(query)?;
    let keep: Vec<String> = schema
        .fields()
        .iter()
        .map(|f| f.name())
        .filter(|n| columns.is_empty() || columns.contains(*n))
        .map(|n| format!("\"{}\"", n.replace('"', "\"\"")))
        .collect();
    // All of them, or none (then the query fails as it would whole, naming what is missing).
    if keep.len() == schema.fields().len() || keep.is_empty() {
        return Ok(query.clone());
    }
    let sql = format!(
        "SELECT {} FROM ({}) AS ward_derived",
        keep.join(", "),
        query.canonical
    );
    let mut out = parse(&sql)?;
    out.tables.clone_from(&query.tables);
    Ok(out)
}

/// The columns of each curated table that running `query` reads, as DataFusion's optimizer
/// prunes them (projections, and the columns of filters given to the scans).
///
/// # Errors
/// A message when the query does not plan.
pub(crate) fn input_columns(
    query: &ParsedQuery,
) -> std::result::Result<BTreeMap<Table, BTreeSet<String>>, String> {
    use datafusion::common::tree_node::TreeNodeRecursion;
    let (state, plan) = plan(query)?;
    let plan = state
        .optimize(&plan)
        .map_err(|e| format!("SQL does not plan: {e}"))?;
    let mut out: BTreeMap<Table, BTreeSet<String>> = BTreeMap::new();
    let mut unknown = None;
    plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            match Table::from_name(scan.table_name.table()) {
                Some(t) => {
                    let cols = out.entry(t).or_default();
                    cols.extend(
                        scan.projected_schema
                            .fields()
                            .iter()
                            .map(|f| f.name().clone()),
                    );
                    for f in &scan.filters {
                        cols.extend(f.column_refs().into_iter().map(|c| c.name.clone()));
                    }
                }
                None => unknown = Some(scan.table_name.to_string()),
            }
        }
        Ok(TreeNodeRecursion::Continue)
    })
    .map_err(|e| e.to_string())?;
    match unknown {
        Some(t) => Err(format!("SQL reads unknown table {t:?}")),
        None => Ok(out),
    }
}

/// Runs a derived query over the given curated rows; the result is sorted by every column
/// (in schema order), so it is the same however DataFusion ordered its work.
///
/// # Errors
/// [`Error::InvalidArgument`] naming the derived table when the query fails.
pub(crate) async fn run(
    name: &str,
    query: &ParsedQuery,
    inputs: &BTreeMap<Table, Vec<RecordBatch>>,
) -> Result<RecordBatch> {
    let ctx = session();
    // The columns the query reads; a curated column it does not read may be missing from the
    // batches (materialization reads only what it needs): it is given as nulls, which the
    // optimizer never reads. A missing column it reads stays missing, and planning names it.
    let reads = input_columns(query).unwrap_or_default();
    let mut used = BTreeMap::new();
    for t in &query.tables {
        let batches = inputs.get(t).cloned().unwrap_or_default();
        let batches = match reads.get(t) {
            Some(cols) => padded(*t, batches, cols)?,
            None => batches,
        };
        used.insert(*t, batches);
    }
    register(&ctx, &used)?;
    execute(name, query, &ctx).await
}

/// `batches` of curated table `t` with the columns of its schema they lack and `reads` does
/// not name added as nulls, in the schema's order (their other columns after).
fn padded(
    t: Table,
    batches: Vec<RecordBatch>,
    reads: &BTreeSet<String>,
) -> Result<Vec<RecordBatch>> {
    let curated = t.schema();
    let Some(first) = batches.first() else {
        return Ok(batches);
    };
    let given = first.schema();
    let missing = |f: &Field| given.field_with_name(f.name()).is_err() && !reads.contains(f.name());
    if !curated.fields().iter().any(|f| missing(f)) {
        return Ok(batches);
    }
    let mut fields: Vec<Field> = Vec::new();
    for f in curated.fields() {
        match given.field_with_name(f.name()) {
            Ok(g) => fields.push(g.clone()),
            Err(_) if missing(f) => fields.push(f.as_ref().clone().with_nullable(true)),
            Err(_) => {}
        }
    }
    for g in given.fields() {
        if curated.field_with_name(g.name()).is_err() {
            fields.push(g.as_ref().clone());
        }
    }
    let schema = Arc::new(Schema::new(fields));
    batches
        .iter()
        .map(|b| {
            let cols = schema
                .fields()
                .iter()
                .map(|f| {
                    b.column_by_name(f.name())
                        .cloned()
                        .unwrap_or_else(|| new_null_array(f.data_type(), b.num_rows()))
                })
                .collect();
            RecordBatch::try_new(schema.clone(), cols)
                .map_err(|e| Error::invalid(format!("derived input {}", t.name()), e.to_string()))
        })
        .collect()
}

/// [`run`] over stored versions: each table the query reads is its Lance dataset, scanned
/// as the query goes (projection and filters pushed down), so only the result is held in
/// memory, however large the tables.
///
/// # Errors
/// As [`run`]; [`Error::Internal`] when a table the query reads is not given.
pub(crate) async fn run_stored(
    name: &str,
    query: &ParsedQuery,
    datasets: &BTreeMap<Table, Arc<lance::Dataset>>,
) -> Result<RecordBatch> {
    let ctx = session();
    for t in &query.tables {
        let ds = datasets.get(t).ok_or_else(|| {
            Error::Internal(format!(
                "derived table {name}: table {} was not opened",
                t.name()
            ))
        })?;
        let provider = lance::datafusion::LanceTableProvider::new(ds.clone(), false, false);
        ctx.register_table(t.name(), Arc::new(provider))
            .map_err(|e| Error::invalid(format!("derived input {}", t.name()), e.to_string()))?;
    }
    execute(name, query, &ctx).await
}

/// Runs `query` in `ctx` (its tables registered) and sorts the result by every column.
async fn execute(name: &str, query: &ParsedQuery, ctx: &SessionContext) -> Result<RecordBatch> {
    let what = || format!("derived table {name}");
    let options = SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false);
    let df = ctx
        .sql_with_options(&query.canonical, options)
        .await
        .map_err(|e| Error::invalid(what(), e.to_string()))?;
    let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
    let batches = df
        .collect()
        .await
        .map_err(|e| Error::invalid(what(), e.to_string()))?;
    let batch = concat_batches(&schema, &batches)?;
    sort_all_columns(&batch)
}

/// Sorts a batch by all its columns, in schema order.
fn sort_all_columns(batch: &RecordBatch) -> Result<RecordBatch> {
    if batch.num_rows() <= 1 || batch.num_columns() == 0 {
        return Ok(batch.clone());
    }
    let fields: Vec<SortField> = batch
        .schema()
        .fields()
        .iter()
        .map(|f| SortField::new(f.data_type().clone()))
        .collect();
    let converter = RowConverter::new(fields)?;
    let rows = converter.convert_columns(batch.columns())?;
    let mut order: Vec<u32> = (0..batch.num_rows() as u32).collect();
    order.sort_by(|a, b| rows.row(*a as usize).cmp(&rows.row(*b as usize)));
    let indices = arrow::array::UInt32Array::from(order);
    Ok(take_record_batch(batch, &indices)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_text_ignores_formatting() {
        let a = parse("select patient_id from encounters where class='inpatient'").unwrap();
        let b =
            parse("SELECT   patient_id\n  FROM encounters -- stays\n WHERE class = 'inpatient'")
                .unwrap();
        assert_eq!(a.canonical, b.canonical);
        assert_eq!(a.tables, vec![Table::Encounters]);
    }

    fn conditions(sql: &str) -> Option<(Table, Vec<(String, Condition)>)> {
        where_conditions(&parse(sql).unwrap()).map(|(t, c)| (t, c.into_iter().collect()))
    }

    #[test]
    fn where_conditions_of_one_table_queries() {
        let eq = |c: &str, v: &str| (c.to_string(), Condition::Eq(v.into()));
        let inp = "inpatient";
        assert_eq!(
            conditions(
                "SELECT patient_id FROM encounters WHERE class = 'inpatient' AND discharge_time IS NOT NULL"
            ),
            Some((Table::Encounters, vec![eq("class", inp)]))
        );
        // Reversed, nested, qualified, unquoted names folded, IN lists; numbers and other
        // operators left out.
        assert_eq!(
            conditions(
                "SELECT * FROM observations o WHERE ('718-7' = o.CODE AND (code_system IN ('LOINC', 'L') AND value_num > 3)) AND status <> 'x'"
            ),
            Some((
                Table::Observations,
                vec![
                    eq("code", "718-7"),
                    (
                        "code_system".to_string(),
                        Condition::In(vec!["LOINC".into(), "L".into()])
                    )
                ]
            ))
        );
        // No usable conjunct: the table, no conditions (read whole).
        for sql in [
            "SELECT * FROM encounters",
            "SELECT * FROM encounters WHERE class = 'inpatient' OR class = 'emergency'",
            "SELECT * FROM encounters WHERE \"CLASS\" = 'inpatient'",
            "SELECT * FROM encounters WHERE class NOT IN ('inpatient')",
            "SELECT * FROM encounters WHERE class = service",
        ] {
            assert_eq!(conditions(sql), Some((Table::Encounters, vec![])), "{sql}");
        }
        // Not one table read once: none.
        for sql in [
            "SELECT e.patient_id FROM encounters e JOIN observations o ON e.encounter_id = o.encounter_id WHERE e.class = 'inpatient'",
            "SELECT * FROM encounters WHERE class = 'inpatient' AND encounter_id IN (SELECT encounter_id FROM encounters WHERE class = 'emergency')",
            "SELECT patient_id FROM encounters WHERE class = 'inpatient' UNION ALL SELECT patient_id FROM encounters",
            "WITH s AS (SELECT * FROM encounters) SELECT * FROM s WHERE class = 'inpatient'",
            "SELECT a.patient_id FROM encounters a, encounters b WHERE a.class = 'inpatient'",
        ] {
            assert_eq!(conditions(sql), None, "{sql}");
        }
    }

    #[test]
    fn source_id_passed_through_or_used() {
        let stays = "SELECT patient_id, encounter_id, admit_time, discharge_time, (discharge_time - admit_time) AS los, known_at, retracted_at, source_id FROM encounters WHERE class = 'inpatient' AND discharge_time IS NOT NULL";
        let of = |sql: &str| source_id_use(&parse(sql).unwrap());
        for sql in [
            stays,
            "SELECT * FROM encounters WHERE class = 'inpatient'",
            "SELECT e.*, e.admit_time AS t FROM encounters e",
            "SELECT patient_id, SOURCE_ID FROM encounters",
            "SELECT patient_id, e.source_id, row_number() OVER (PARTITION BY patient_id) AS n FROM encounters e",
        ] {
            assert_eq!(of(sql), SourceIdUse::Through, "{sql}");
        }
        assert_eq!(
            of("SELECT patient_id, known_at FROM encounters"),
            SourceIdUse::None
        );
        assert_eq!(
            of("SELECT count(*) AS n FROM encounters"),
            SourceIdUse::None
        );
        for sql in [
            "SELECT patient_id, source_id AS sid FROM encounters",
            "SELECT patient_id, source_id FROM encounters WHERE source_id <> ''",
            "SELECT patient_id, upper(source_id) AS source_id FROM encounters",
            "SELECT DISTINCT patient_id, source_id FROM encounters",
            "SELECT patient_id, source_id FROM encounters GROUP BY patient_id, source_id",
            "SELECT patient_id, source_id FROM encounters ORDER BY admit_time LIMIT 5",
            "SELECT e.patient_id, e.source_id FROM encounters e JOIN patients p ON e.patient_id = p.patient_id",
            "SELECT * FROM encounters WHERE class IN (SELECT class FROM encounters)",
            "WITH s AS (SELECT * FROM encounters) SELECT * FROM s",
            "SELECT patient_id, 'source_id' AS t, source_id FROM encounters",
            "SELECT patient_id, source_id, source_id AS s2 FROM encounters",
            "SELECT patient_id, \"SOURCE_ID\" FROM encounters",
        ] {
            assert_eq!(of(sql), SourceIdUse::Other, "{sql}");
        }
    }

    #[test]
    fn narrowed_queries_read_only_what_their_columns_need() {
        let q = parse(
            "SELECT patient_id, encounter_id, (discharge_time - admit_time) AS los, known_at FROM encounters WHERE class = 'inpatient' AND discharge_time IS NOT NULL",
        )
        .unwrap();
        let all = input_columns(&q).unwrap();
        assert!(all[&Table::Encounters].contains("encounter_id"));
        let keep: BTreeSet<String> = ["patient_id", "los", "known_at", "missing"]
            .map(String::from)
            .into();
        let n = narrowed(&q, &keep).unwrap();
        assert_eq!(n.tables, q.tables);
        let schema = plan_schema(&n).unwrap();
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, ["patient_id", "los", "known_at"]);
        let reads: Vec<String> = input_columns(&n).unwrap()[&Table::Encounters]
            .iter()
            .cloned()
            .collect();
        assert_eq!(
            reads,
            [
                "admit_time",
                "class",
                "discharge_time",
                "known_at",
                "patient_id"
            ]
        );
        // Every column kept: the query itself.
        let every: BTreeSet<String> = BTreeSet::new();
        assert_eq!(narrowed(&q, &every).unwrap().canonical, q.canonical);
    }

    #[test]
    fn only_queries_over_curated_tables() {
        assert!(parse("DROP TABLE encounters").is_err());
        assert!(parse("SELECT * FROM nowhere")
            .unwrap_err()
            .contains("nowhere"));
        assert!(parse("SELECT 1; SELECT 2").is_err());
    }

    #[test]
    fn schema_is_planned_without_data() {
        let q = parse(
            "SELECT patient_id, known_at, (discharge_time - admit_time) AS los FROM encounters",
        )
        .unwrap();
        let s = plan_schema(&q).unwrap();
        assert_eq!(s.field(0).name(), "patient_id");
        assert!(s.field_with_name("los").is_ok());
        let bad = parse("SELECT nope FROM encounters").unwrap();
        assert!(plan_schema(&bad).is_err());
    }
}
