-- Argo CD health of an OmenDBBackup (omendb.io/v1alpha1), read from the status the OmenDB operator
-- writes (operator/omendb_operator/backups.py: phase Pending -> Running -> Succeeded | Failed, error,
-- condition Ready). Install as resource.customizations.health.omendb.io_OmenDBBackup (docs/gitops.md).
-- The kstatus conditions Reconciling and Stalled are honoured when the operator writes them.
local hs = {}

local function condition(status, type)
  if status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == type then
      return c
    end
  end
  return nil
end

local function is_true(c)
  return c ~= nil and c.status == "True"
end

local function message(c, fallback)
  if c ~= nil and c.message ~= nil and c.message ~= "" then
    return c.message
  end
  return fallback
end

local status = obj.status
if status == nil or status.phase == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the OmenDB operator to start the backup"
  return hs
end

local ready = condition(status, "Ready")
local stalled = condition(status, "Stalled")
if is_true(stalled) then
  hs.status = "Degraded"
  hs.message = message(stalled, "Stalled")
  return hs
end

-- A finished backup is final (the operator never runs it again, nor updates its observedGeneration).
if status.phase == "Failed" then
  hs.status = "Degraded"
  hs.message = status.error or message(ready, "the backup failed")
  return hs
end
if status.phase == "Succeeded" then
  hs.status = "Healthy"
  hs.message = message(ready, "the backup succeeded")
  return hs
end

local generation = obj.metadata.generation
if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the OmenDB operator to act on generation " .. tostring(generation)
  return hs
end

local reconciling = condition(status, "Reconciling")
if is_true(reconciling) then
  hs.status = "Progressing"
  hs.message = message(reconciling, "Reconciling")
  return hs
end

-- Pending (waiting for another backup, a restore or a bootstrap) and Running.
hs.status = "Progressing"
hs.message = status.phase .. ": " .. message(ready, "the backup has not finished")
return hs
