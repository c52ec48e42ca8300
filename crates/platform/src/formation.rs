//! The formation: how many dynos of each process type run, at what size
//! (`scale`), what runs now (`ps`), and restarting and stopping dynos.

use crew_engine::DynoInfo;
use crew_procfile::FormationChange;
use crew_store::FormationRow;

use crate::size::size_named;
use crate::{Platform, PlatformError};

impl Platform {
    /// Stores the new formation, then applies it. A new size restarts the
    /// app's dynos with it, new web dynos up before old ones stop.
    pub async fn scale(
        &self,
        app: &str,
        changes: &[FormationChange],
    ) -> Result<Vec<FormationRow>, PlatformError> {
        let changes = changes
            .iter()
            .map(|c| {
                let size = c
                    .size
                    .as_deref()
                    .map(|s| size_named(s, self.dyno_memory).map(|size| size.name))
                    .transpose()?;
                Ok(FormationChange { size, ..c.clone() })
            })
            .collect::<Result<Vec<_>, PlatformError>>()?;
        let rows = self.store.formation(app)?;
        let mut formation =
            crew_procfile::Formation::new(rows.iter().map(|r| r.process_type.clone()), 0);
        let current: Vec<FormationChange> = rows
            .iter()
            .map(|r| FormationChange {
                process_type: r.process_type.clone(),
                quantity: crew_procfile::Quantity::Set(r.quantity),
                size: None,
            })
            .collect();
        formation.apply(&current)?;
        formation.apply(&changes)?;
        let updated: Vec<FormationRow> = rows
            .iter()
            .map(|r| {
                let size = changes
                    .iter()
                    .rev()
                    .find(|c| c.process_type == r.process_type)
                    .and_then(|c| c.size.clone())
                    .unwrap_or_else(|| r.size.clone());
                FormationRow {
                    process_type: r.process_type.clone(),
                    quantity: formation.get(&r.process_type).unwrap_or(0),
                    size,
                }
            })
            .collect();
        let resized = updated
            .iter()
            .zip(&rows)
            .any(|(new, old)| new.size != old.size);
        let rows = self.store.set_formation(app, &updated)?;
        let running = self.running_app(app);
        let text: Vec<String> = rows
            .iter()
            .map(|r| format!("{}@{}:{}", r.process_type, r.quantity, r.size))
            .collect();
        running
            .event("api", format!("Scaled to {}", text.join(" ")))
            .await;
        if resized {
            running.boot(&self.release_context()).await?;
        } else {
            running.scale(&rows).await?;
        }
        Ok(rows)
    }

    pub async fn ps(&self, app: &str) -> Result<Vec<DynoInfo>, PlatformError> {
        self.store.app(app)?;
        Ok(self.running_app(app).ps().await)
    }

    pub async fn restart(&self, app: &str, target: Option<String>) -> Result<(), PlatformError> {
        self.store.app(app)?;
        self.running_app(app).restart(target).await
    }

    pub async fn stop(&self, app: &str, target: String) -> Result<(), PlatformError> {
        self.store.app(app)?;
        self.running_app(app).stop_dyno(target).await
    }
}
