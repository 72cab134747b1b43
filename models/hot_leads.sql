SELECT lead_id, email, last_event_time, lead_score,
       first_name, last_name, company,
       (SELECT MIN(reps.hubspot_owner_id) FROM reps WHERE reps.territory = marketing_leads.territory) AS hubspot_owner_id
FROM marketing_leads WHERE lead_score > 80 AND owner_id IS NULL AND last_event_time > CURRENT_DATE - INTERVAL '1 hour'
