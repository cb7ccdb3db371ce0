-- What a device list shows of a manifest (folders, tool names), kept beside
-- the whole manifest so listing devices never loads tools' schemas.
ALTER TABLE devices ADD COLUMN manifest_summary TEXT;
